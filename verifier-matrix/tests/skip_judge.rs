//! issue 15, item 9: an unavailable program or a skipped check on a kernel that should have the
//! feature fails the row, unless the kernel explains it; the report names the explanation.
//!
//! Before, `report::judge` never looked at unavailable programs or skips: the first case below
//! (a 6.1 guest with an unavailable program and nothing to explain it) passed.

use rstest::rstest;
use verifier_matrix::report::{
    document::Report,
    judge::judge,
    render::render_markdown,
    results::{self, GuestResults},
    Row, Verdict,
};

const KERNEL_6_1: &str = r#"{"kind":"kernel","release":"6.1.0-50-cloud-amd64","version":"1 SMP","btf":true}"#;
const ATTACHED: &str =
    r#"{"kind":"program","monitor":"process","program":"process_exec","status":"attached","path":"tracepoint:sched/sched_process_exec"}"#;
const CHECK: &str = r#"{"kind":"check","name":"process.leaf","pass":true,"detail":""}"#;
const DONE: &str = r#"{"kind":"done"}"#;

/// A Debian-like config with kprobes and modules off.
const CONFIG: &str = "CONFIG_BPF_EVENTS=y\nCONFIG_DEBUG_INFO_BTF=y\nCONFIG_BPF_JIT=y\nCONFIG_FUNCTION_TRACER=y\n\
                      # CONFIG_KPROBES is not set\n# CONFIG_MODULES is not set\nCONFIG_FTRACE_SYSCALLS=y\n";

fn guest(kernel: &str, extra: &[&str], config: Option<&str>) -> GuestResults {
    let lines: Vec<String> = [kernel, ATTACHED, CHECK].iter().chain(extra).chain(&[DONE]).map(|l| (*l).to_owned()).collect();
    let mut r = results::parse(&lines);
    r.set_config(config.map(|c| tapio_kernel_gates::KernelConfig::parse(c, "config-test")).ok_or_else(|| "none".to_owned()));
    r.explain();
    r
}

fn row(results: GuestResults) -> Row {
    let verdict = judge(&results, &[]);
    Row { line: "6.1".into(), arch: verifier_matrix::arch::Arch::X86_64, release: results.release.clone(), accel: None, wall: None, verdict, results: Some(results), splats: vec![], console_tail: None }
}

#[rstest]
// What the guest sent before this change: an unavailable program that names no feature.
#[case::unavailable_naming_nothing(
    KERNEL_6_1,
    &[r#"{"kind":"program","monitor":"network","program":"connect_attempt","status":"unavailable","path":"fexit: EINVAL"}"#],
    None,
    "network/connect_attempt unavailable and the kernel does not explain it"
)]
// fentry and kprobes both in 6.1, probes fine, config unknown: nothing explains it.
#[case::unavailable_on_a_kernel_that_has_it(
    KERNEL_6_1,
    &[
        r#"{"kind":"feature","name":"fentry","answer":{"answer":"supported"}}"#,
        r#"{"kind":"program","monitor":"network","program":"connect_attempt","status":"unavailable","path":"fexit: EINVAL","needs":[["fentry"],["kprobe"]]}"#,
    ],
    None,
    "fentry is in every kernel since 5.5 (running 6.1)"
)]
// A skipped check on a kernel that has the feature fails as well.
#[case::skip_on_a_kernel_that_has_it(
    KERNEL_6_1,
    &[r#"{"kind":"skip","name":"fallback.kprobe","reason":"no kprobes","needs":[["kprobe"]]}"#],
    Some("CONFIG_KPROBES=y\nCONFIG_KPROBE_EVENTS=y\n"),
    "SKIP fallback.kprobe and the kernel does not explain it (needs kprobe)"
)]
// So does a program the verifier pass skipped.
#[case::verifier_skip_on_a_kernel_that_has_it(
    KERNEL_6_1,
    &[r#"{"kind":"verifier","monitor":"network","program":"network_connect_fexit","accepted":false,"verified_insns":null,"load_us":null,"error":null,"skipped":"fentry probe failed","needs":[["fentry"]]}"#],
    Some(CONFIG),
    "verifier skipped network/network_connect_fexit"
)]
fn unexplained_fails_the_row(#[case] kernel: &str, #[case] extra: &[&str], #[case] config: Option<&str>, #[case] want: &str) {
    let r = row(guest(kernel, extra, config));
    assert!(matches!(&r.verdict, Verdict::Fail(why) if why.contains(want)), "want a failure naming `{want}`: {:?}", r.verdict);
    let md = render_markdown(&Report::of_rows(vec![r]));
    assert!(md.contains("UNEXPLAINED"), "{md}");
}

#[rstest]
// Below the first version: a 5.4 kernel has no ring buffer.
#[case::below_version(
    r#"{"kind":"kernel","release":"5.4.0-1","version":"1","btf":true}"#,
    &[r#"{"kind":"skip","name":"fallback.perf_ringbuf","reason":"no ring buffer","needs":[["ring buffer"]]}"#],
    None,
    "SKIP fallback.perf_ringbuf: no ring buffer (explained: ring buffer: requires >= 5.8, running 5.4)"
)]
// A config option off: the kernel's own config says so.
#[case::config_off(
    KERNEL_6_1,
    &[r#"{"kind":"program","monitor":"security","program":"init_module","status":"unavailable","path":"no tracepoint","needs":[["syscall tracepoints","module syscall tracepoints"]]}"#],
    Some(CONFIG),
    "security/init_module unavailable: no tracepoint (explained: module syscall tracepoints: CONFIG_MODULES is off in the kernel's config)"
)]
// Policy refusing fentry (measured by its probe as root), kprobes configured off: this host.
#[case::runtime_refusal(
    KERNEL_6_1,
    &[
        r#"{"kind":"feature","name":"fentry","answer":{"answer":"refused","errno":1,"message":"program load: Operation not permitted"}}"#,
        r#"{"kind":"program","monitor":"network","program":"connect_attempt","status":"unavailable","path":"fexit: EPERM","needs":[["fentry"],["kprobe"]]}"#,
    ],
    Some(CONFIG),
    "network/connect_attempt unavailable: fexit: EPERM (explained: fentry: runtime policy refuses fentry: EPERM from its minimal probe as root; kprobe: CONFIG_KPROBES is off in the kernel's config)"
)]
fn explained_skips_pass_and_the_report_names_why(
    #[case] kernel: &str,
    #[case] extra: &[&str],
    #[case] config: Option<&str>,
    #[case] listed: &str,
) {
    let r = row(guest(kernel, extra, config));
    assert_eq!(r.verdict, Verdict::Pass, "{:#?}", r.results);
    let json = serde_json::to_string(&r).expect("a row serialises");
    assert!(json.contains(r#""judgement":"explained""#), "{json}");
    let md = render_markdown(&Report::of_rows(vec![r]));
    assert!(md.contains(listed), "want `{listed}` in:\n{md}");
}

/// A permission error is a refusal only as the answer says; a failed probe explains nothing.
#[test]
fn a_failed_probe_is_no_explanation() {
    let r = row(guest(
        KERNEL_6_1,
        &[
            r#"{"kind":"feature","name":"fentry","answer":{"answer":"failed","errno":16,"message":"busy"}}"#,
            r#"{"kind":"program","monitor":"network","program":"network_connect_fexit","status":"unavailable","path":"fexit","needs":[["fentry"]]}"#,
        ],
        Some(CONFIG),
    ));
    assert!(matches!(&r.verdict, Verdict::Fail(why) if why.contains("probe failed (EBUSY)")), "{:?}", r.verdict);
}
