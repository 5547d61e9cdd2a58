//! Real-kernel tests of the feature probes: known facts of any kernel with vmlinux BTF, the
//! version check (a kernel newer than a gate must not report it absent), and that a permission
//! error is reported as an error, not as "absent".

use std::process::Command;

use tapio_features::features::{self, Feature, FeatureStatus};

mod common;

/// Features a kernel newer than the gate may lack for a reason no config option states: the BPF
/// LSM runs only when the boot command line's `lsm=` (or CONFIG_LSM's default list) names it.
const OFF_AT_BOOT: &[&str] = &["lsm"];

/// Set in the unprivileged child of [`permission_error_is_error_not_absent`].
const CHILD_ENV: &str = "TAPIO_FEATURES_UNPRIVILEGED_CHILD";
const CHILD_MARK: &str = "FEATURE_JSON ";

/// `(major, minor)` of a version such as `6.18.44-fc` or `5.8`.
fn parse_version(text: &str) -> (u32, u32) {
    let mut parts = text.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

fn running_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("read osrelease");
    parse_version(release.trim())
}

#[test]
fn version_parsing() {
    assert_eq!(parse_version("6.18.44-fc-v782"), (6, 18));
    assert_eq!(parse_version("5.8"), (5, 8));
    assert_eq!(parse_version("4.19.0-27-amd64"), (4, 19));
    assert!(parse_version("5.10") > parse_version("5.9"));
}

#[test]
fn every_name_probes() {
    for name in features::names() {
        assert_eq!(features::probe(name).map(|f| f.name), Some(name));
    }
    assert!(features::probe("no such feature").is_none());
}

/// What every kernel with vmlinux BTF has, each probed on its own.
#[rstest::rstest]
fn known_facts_of_a_btf_kernel(#[values("btf", "vmlinux btf", "ring buffer", "lru hash", "perf event array", "raw tracepoint")] name: &str) {
    if common::skip_unless_root("known_facts_of_a_btf_kernel") {
        return;
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        common::skip_for_kernel("known_facts_of_a_btf_kernel", &tapio_kernel_gates::Needs::one("vmlinux btf"), "no /sys/kernel/btf/vmlinux");
        return;
    }
    let feature = features::probe(name).unwrap_or_else(|| panic!("{name}: no such probe"));
    let table = features::render_text(std::slice::from_ref(&feature));
    assert_eq!(feature.status, FeatureStatus::Present, "{name}\n{table}");
}

/// cilium's checkVersion: on a kernel at least as new as a gate, "absent" is a probe bug unless the
/// kernel explains it (tapio_kernel_gates::judge: a config option of the feature off).
#[test]
fn no_feature_absent_on_a_newer_kernel() {
    if common::skip_unless_root("no_feature_absent_on_a_newer_kernel") {
        return;
    }
    let running = running_version();
    let all = features::probe_all();
    let table = features::render_text(&all);
    let facts = features::kernel_facts();
    let mut wrong = Vec::new();
    for f in all.iter().filter(|f| matches!(f.status, FeatureStatus::Absent { .. }) && !OFF_AT_BOOT.contains(&f.name)) {
        match tapio_kernel_gates::judge(&tapio_kernel_gates::Needs::one(f.name), &facts) {
            tapio_kernel_gates::Judgement::Explained { excuses } => {
                println!("{} absent: {}", f.name, excuses.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
            }
            tapio_kernel_gates::Judgement::Unexplained { why } => wrong.push(why),
        }
    }
    assert!(wrong.is_empty(), "absent although the kernel {running:?} should have it: {wrong:#?}\n{table}");
}

/// The JSON form the `features --json` command prints is stable: `{name, since, status: {state, ..}}`.
#[test]
fn json_shape() {
    let f =
        Feature { name: "ring buffer", since: "5.8", status: FeatureStatus::Error { errno: 1, message: "m".into() } };
    let v = serde_json::to_value(&f).expect("serialize");
    assert_eq!(
        v,
        serde_json::json!({"name": "ring buffer", "since": "5.8", "status": {"state": "error", "errno": 1, "message": "m"}})
    );
}

/// Runs one probe without privileges (in a child made by `setpriv`) and expects an EPERM error.
#[test]
fn permission_error_is_error_not_absent() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // This is the unprivileged child: probe and report.
        let feature = features::probe("lru hash").expect("probe exists");
        println!("{CHILD_MARK}{}", serde_json::to_string(&feature).expect("serialize"));
        return;
    }
    if common::skip_unless_root("permission_error_is_error_not_absent") {
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    let out = match Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(&exe)
        .args(["--exact", "permission_error_is_error_not_absent", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            common::skip::skip("permission_error_is_error_not_absent", common::skip::Why::Environment(format!("setpriv unavailable ({e})")));
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.split_once(CHILD_MARK).map(|(_, json)| json)).unwrap_or_else(|| {
        panic!(
            "child printed no result: status {}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let value: serde_json::Value = serde_json::from_str(line).expect("child json");
    assert_eq!(value["status"]["state"], "error", "unprivileged probe must be an error, not absent: {value}");
    let errno = value["status"]["errno"].as_i64().expect("errno");
    assert!(errno == libc::EPERM as i64 || errno == libc::EACCES as i64, "{value}");
}
