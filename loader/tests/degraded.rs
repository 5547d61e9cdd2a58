//! One monitor that cannot load does not stop the others. The failure is real: a BTF file with
//! only the process monitor's types (`tapio-load btf minimize`), against which the kernel
//! monitor's CO-RE relocations find nothing and the verifier rejects its programs. The loader
//! runs the process monitor, says why the kernel monitor is not running in its log, `/healthz`
//! (200, degraded) and metrics; `--strict` stops instead, and so does a run where nothing loads.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::{http_get, sample};
use rstest::rstest;

#[test]
fn a_monitor_that_fails_to_load_leaves_the_others_running() {
    if common::skip_unless_root("a_monitor_that_fails_to_load_leaves_the_others_running") {
        return;
    }
    let _kernel = common::kernel_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let btf = common::process_only_btf(dir.path());
    let port = common::free_port();
    let loader = common::Loader::start(&[
        "--monitors",
        "process,kernel",
        "--btf",
        btf.to_str().expect("utf-8 path"),
        "--metrics-address",
        &format!("127.0.0.1:{port}"),
    ]);

    let (status, health) = http_get(port, "/healthz");
    assert_eq!(status, 200, "/healthz with one monitor of two running: {health}");
    assert!(health.starts_with("ok: degraded: 1 of 2 monitors not running (kernel)"), "{health}");
    assert!(health.contains("monitor kernel: program kernel_sock_state: verifier rejected it"), "no reason in /healthz: {health}");
    assert!(health.contains("(os error "), "the kernel's errno is missing from /healthz: {health}");

    let (_, page) = http_get(port, "/metrics");
    assert_eq!(sample(&page, "tapio_monitor_running{monitor=\"process\"}"), Some(1.0), "{page}");
    assert_eq!(sample(&page, "tapio_monitor_running{monitor=\"kernel\"}"), Some(0.0), "{page}");
    assert_eq!(sample(&page, "tapio_monitors_requested"), Some(2.0), "{page}");
    let failed = page.lines().find(|l| l.starts_with("tapio_monitor_failed{monitor=\"kernel\"")).unwrap_or_else(|| panic!("no tapio_monitor_failed for kernel:\n{page}"));
    assert!(failed.ends_with(" 1") && failed.contains("verifier rejected it") && !failed.contains("errno=\"0\""), "{failed}");
    // The process monitor's programs are all there is to owe.
    assert_eq!(sample(&page, "tapio_programs_planned"), Some(common::planned_programs("process") as f64), "{page}");

    // The process monitor streams.
    Command::new("/bin/echo").arg("tapio-degraded").stdout(Stdio::null()).status().expect("run echo");
    let mut seen = Vec::new();
    let exec = loader.wait_for(&mut seen, Duration::from_secs(10), |e| {
        e["event"] == "exec" && e["argv"].as_array().is_some_and(|a| a.iter().any(|v| v == "tapio-degraded"))
    });
    let (_, stderr, status) = loader.finish();
    assert!(exec.is_some(), "no exec from the process monitor; stderr:\n{stderr}");
    assert!(status.success(), "{stderr}");
    let logged = stderr.lines().find(|l| l.contains("monitor not running") && l.contains("monitor kernel: program kernel_sock_state"));
    assert!(logged.is_some_and(|l| l.contains("ERROR")), "the failure is not logged as an error:\n{stderr}");
    assert!(stderr.contains("attached 1 monitor(s) (1 not running: kernel)"), "{stderr}");
}

#[rstest]
#[case::strict_flag(&["--monitors", "process,kernel", "--strict"], None)]
#[case::nothing_loaded(&["--monitors", "kernel"], None)]
#[case::strict_from_the_environment(&["--monitors", "process,kernel"], Some("true"))]
fn strict_or_nothing_loaded_stops_the_run(#[case] args: &[&str], #[case] strict_env: Option<&str>) {
    if common::skip_unless_root("strict_or_nothing_loaded_stops_the_run") {
        return;
    }
    let _kernel = common::kernel_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let btf = common::process_only_btf(dir.path());
    let btf = btf.to_str().expect("utf-8 path");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tapio-load"));
    cmd.args(["run", "--metrics-address", "off", "--btf", btf]).args(args).stdout(Stdio::null()).env_remove("TAPIO_STRICT");
    if let Some(value) = strict_env {
        cmd.env("TAPIO_STRICT", value);
    }
    let out = cmd.output().expect("run tapio-load");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} must exit non-zero:\n{stderr}");
    assert!(!stderr.contains("streaming events"), "{args:?} started streaming:\n{stderr}");
    let error = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    let full = &stderr[stderr.find(error).expect("error line")..];
    assert!(full.contains("monitor kernel: program kernel_sock_state: verifier rejected it"), "{args:?}: {full}");
}

/// `check --json` carries the verifier's whole log, not the tail an error message shows, and
/// the kernel's errno.
#[test]
fn check_json_carries_the_whole_verifier_log() {
    if common::skip_unless_root("check_json_carries_the_whole_verifier_log") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let btf = common::process_only_btf(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_tapio-load"))
        .args(["check", "--json", "--monitors", "advanced", "--btf", btf.to_str().expect("utf-8 path")])
        .output()
        .expect("run tapio-load check");
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("check --json: {e}\n{}", String::from_utf8_lossy(&out.stderr)));
    let rejected: Vec<&serde_json::Value> = results.as_array().expect("array").iter().filter(|r| r["accepted"] == false && r["skipped"].is_null()).collect();
    assert!(!rejected.is_empty(), "nothing rejected: {results:#}");
    let longest = rejected
        .iter()
        .max_by_key(|r| r["verifier_log"].as_str().map_or(0, |l| l.lines().count()))
        .expect("a rejection");
    let log = longest["verifier_log"].as_str().unwrap_or_else(|| panic!("no verifier_log: {longest:#}"));
    let lines = log.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines > tapio_runtime::monitors::VERIFIER_LOG_TAIL, "log of {lines} lines: no longer than the tail, so nothing proves it whole:\n{log}");
    assert!(log.lines().next().is_some_and(|l| l.starts_with("0: R1=ctx()")), "the log's first line is missing:\n{log}");
    assert!(log.contains("invalid func unknown#195896080"), "{log}");
    let error = longest["error"].as_str().expect("error");
    assert!(error.contains("verifier log (tail)") && error.contains("(os error "), "{error}");
    assert!(longest["errno"].as_i64().is_some_and(|n| n > 0), "{longest:#}");
}
