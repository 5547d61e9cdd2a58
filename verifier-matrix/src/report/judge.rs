//! Decides a booted row's verdict from what the guest agent sent and what the console showed.

use crate::{
    report::{first_line, results::GuestResults, Verdict},
    vm::console::Splat,
};

/// Decides a booted row's verdict from what the agent sent and what the console showed.
///
/// A program unavailable, a check skipped or a program the verifier pass skipped is a kernel
/// fact only when the kernel explains it ([`tapio_kernel_gates::judge`]: older than the feature,
/// the feature's config off, or its probe refused as root); otherwise it fails the row, as
/// cilium/ebpf's `checkVersion` fails a test that skips on a kernel that should have the feature.
pub fn judge(results: &GuestResults, splats: &[Splat]) -> Verdict {
    let mut problems = Vec::new();
    if !results.done {
        problems.push("agent did not finish".to_owned());
    }
    for e in &results.setup_errors {
        problems.push(format!("setup: {e}"));
    }
    for m in &results.malformed {
        problems.push(format!("malformed {m}"));
    }
    for v in results.verifier.iter().filter(|v| !v.accepted && v.skipped.is_none()) {
        let why = v.error.as_deref().unwrap_or("no error text");
        problems.push(format!("verifier rejected {}/{}: {why}", v.monitor, v.program));
    }
    for p in results.programs.iter().filter(|p| !p.attached) {
        problems.push(format!("{}/{}: {}", p.monitor, p.program, first_line(&p.detail)));
    }
    for c in results.checks.iter().filter(|c| !c.pass) {
        problems.push(format!("check {} failed", c.name));
    }
    let facts = results.facts();
    for (what, needs) in results.not_run() {
        if let tapio_kernel_gates::Judgement::Unexplained { why } = tapio_kernel_gates::judge(needs, &facts) {
            problems.push(format!("{what} and the kernel does not explain it (needs {needs}): {why}"));
        }
    }
    if results.programs.is_empty() {
        problems.push("no program reported".to_owned());
    }
    for s in splats {
        problems.push(format!("kernel {}: {}", s.kind, s.first_line));
    }
    if problems.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::report::results::{CheckResult, ProgramResult};

    fn good() -> GuestResults {
        GuestResults {
            release: Some("6.1".into()),
            programs: vec![ProgramResult {
                monitor: "process".into(),
                program: "process_exec".into(),
                attached: true,
                detail: String::new(),
                needs: Default::default(),
                judgement: None,
            }],
            checks: vec![CheckResult { name: "process.leaf".into(), pass: true, detail: String::new() }],
            done: true,
            ..Default::default()
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(judge(&good(), &[]), Verdict::Pass);
        let mut r = good();
        r.checks[0].pass = false;
        assert!(matches!(judge(&r, &[]), Verdict::Fail(m) if m.contains("process.leaf")));
        let mut r = good();
        r.done = false;
        assert!(matches!(judge(&r, &[]), Verdict::Fail(m) if m.contains("did not finish")));
        let r = GuestResults { done: true, ..Default::default() };
        assert!(matches!(judge(&r, &[]), Verdict::Fail(m) if m.contains("no program")));
    }

    /// issue 15, item 8: a line the harness does not understand fails the row, naming the line;
    /// before, results.rs dropped unknown kinds and judge() ignored lines that were not JSON.
    const GOOD_LINES: [&str; 4] = [
        r#"{"kind":"kernel","release":"6.1.0","version":"1","btf":true}"#,
        r#"{"kind":"program","monitor":"process","program":"process_exec","status":"attached","path":"tp"}"#,
        r#"{"kind":"check","name":"process.leaf","pass":true,"detail":""}"#,
        r#"{"kind":"done"}"#,
    ];

    #[test]
    fn good_results_lines_pass() {
        let lines: Vec<String> = GOOD_LINES.map(str::to_owned).to_vec();
        assert_eq!(judge(&crate::report::results::parse(&lines), &[]), Verdict::Pass);
    }

    #[rstest]
    #[case::misspelt_kind(r#"{"kind":"chek","name":"process.exit","pass":false,"detail":"a misspelt kind"}"#)]
    #[case::misspelt_field(r#"{"kind":"check","name":"process.exit","passed":false,"detail":"a misspelt field"}"#)]
    #[case::not_json("tapio-guest: something printed on the results port")]
    fn a_bad_results_line_fails_the_row(#[case] bad: &str) {
        let mut lines: Vec<String> = GOOD_LINES.map(str::to_owned).to_vec();
        lines.insert(2, bad.to_owned());
        let verdict = judge(&crate::report::results::parse(&lines), &[]);
        assert!(matches!(&verdict, Verdict::Fail(m) if m.contains("malformed results line 3") && m.contains(bad)), "{bad}: {verdict:?}");
    }
}
