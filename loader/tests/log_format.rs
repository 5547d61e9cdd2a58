//! `--log-format json`: every diagnostic line on stderr is one JSON object with structured fields
//! (a container log shares stdout's events and stderr's diagnostics); text stays the default.

mod common;

use std::process::{Command, Stdio};

use rstest::rstest;
use serde_json::Value;

fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {l}\n--- stderr ---\n{stderr}")))
        .collect()
}

#[test]
fn json_diagnostics_carry_structured_fields() {
    if common::skip_unless_root("json_diagnostics_carry_structured_fields") {
        return;
    }
    let _kernel = common::kernel_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    // A degraded start, so the failure record is in the log too.
    let btf = common::process_only_btf(dir.path());
    let loader = common::Loader::start(&[
        "--log-format",
        "json",
        "--monitors",
        "process,kernel",
        "--btf",
        btf.to_str().expect("utf-8 path"),
        "--metrics-address",
        "off",
    ]);
    let (_, stderr, status) = loader.finish();
    assert!(status.success(), "{stderr}");
    let records = json_lines(&stderr);
    for r in &records {
        for key in ["timestamp", "level", "message"] {
            assert!(r.get(key).is_some(), "no `{key}` in {r}");
        }
    }
    let attached: Vec<&Value> = records.iter().filter(|r| r["message"] == "attached").collect();
    assert_eq!(attached.len(), common::planned_programs("process"), "{stderr}");
    for r in &attached {
        assert_eq!(r["monitor"], "process", "{r}");
        assert!(r["program"].as_str().is_some_and(|p| p.starts_with("process_")) && r["path"].is_string(), "{r}");
    }
    let failed = records
        .iter()
        .find(|r| r["level"] == "ERROR" && r["monitor"] == "kernel")
        .unwrap_or_else(|| panic!("no ERROR record for the kernel monitor:\n{stderr}"));
    assert!(failed["errno"].as_i64().is_some_and(|n| n > 0), "{failed}");
    assert!(failed["message"].as_str().is_some_and(|m| m.contains("verifier rejected it")), "{failed}");
    let start = records
        .iter()
        .find(|r| r["message"].as_str().is_some_and(|m| m.contains("streaming events")))
        .unwrap_or_else(|| panic!("no start-up record:\n{stderr}"));
    assert_eq!((start["monitors_running"].as_u64(), start["monitors_failed"].as_u64()), (Some(1), Some(1)), "{start}");
}

fn run_tapio(args: &[&str], env: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tapio-load"));
    cmd.args(args).stdout(Stdio::null()).env_remove("TAPIO_LOG_FORMAT");
    if let Some(format) = env {
        cmd.env("TAPIO_LOG_FORMAT", format);
    }
    cmd.output().expect("run tapio-load")
}

#[rstest]
#[case::flag(&["--log-format", "json", "run", "--monitors", "nope"], None)]
#[case::env(&["run", "--monitors", "nope"], Some("json"))]
fn json_errors(#[case] args: &[&str], #[case] env: Option<&str>) {
    let out = run_tapio(args, env);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let records = json_lines(&stderr);
    assert_eq!(records.len(), 1, "{stderr}");
    assert_eq!(records[0]["level"], "ERROR");
    assert!(records[0]["message"].as_str().is_some_and(|m| m.contains("unknown monitor `nope`")), "{stderr}");
}

#[test]
fn text_is_the_default_and_an_unknown_format_is_refused() {
    let out = run_tapio(&["run", "--monitors", "nope"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: config key monitors: "), "text is the default: {stderr}");
    let out = run_tapio(&["--log-format", "xml", "run"], None);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("expected `text` or `json`"));
}
