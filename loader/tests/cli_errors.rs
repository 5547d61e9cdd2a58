//! Bad input and bad conditions: one clear line, a non-zero exit, no backtrace, nothing attached.

mod common;

use std::{
    process::{Command, Output},
    time::Duration,
};

use common::kernel_lock;
use rstest::rstest;
use tapio_bundle::OBJECTS;

fn tapio(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tapio-load")).args(args).output().expect("run tapio-load")
}

fn assert_clean_failure(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail; stderr: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line expected:\n{stderr}");
    for n in needles {
        assert!(errors[0].contains(n), "error line lacks `{n}`: {}", errors[0]);
    }
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn unknown_monitor() {
    let out = tapio(&["run", "--monitors", "process,nope"]);
    assert_clean_failure(&out, &["unknown monitor `nope`", "process"]);
}

#[rstest]
#[case::truncated("truncated.bpf.o", |real: &[u8]| real[..real.len() / 3].to_vec())]
#[case::garbage("garbage.bpf.o", |_: &[u8]| b"this is not an ELF object at all".to_vec())]
fn corrupt_and_truncated_objects(#[case] name: &str, #[case] spoil: fn(&[u8]) -> Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, spoil(OBJECTS[0].bytes)).unwrap();
    let p = path.to_str().unwrap();
    let out = tapio(&["inspect", "--object", p]);
    assert_clean_failure(&out, &[p]);
}

#[test]
fn a_whole_object_is_inspected() {
    let dir = tempfile::tempdir().unwrap();
    let real = OBJECTS[0].bytes;
    let whole = dir.path().join("whole.bpf.o");
    std::fs::write(&whole, real).unwrap();
    let out = tapio(&["inspect", "--json", "--object", whole.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v[0]["programs"].as_array().unwrap().len() >= 3);
}

/// Without privileges: the error names CAP_BPF and CAP_PERFMON, and nothing is left attached.
#[test]
fn without_privileges() {
    let _serial = kernel_lock();
    // setpriv drops to an unprivileged user with an empty capability set.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(env!("CARGO_BIN_EXE_tapio-load"))
        .args(["run", "--monitors", "process"])
        .output()
        .expect("setpriv (util-linux)");
    assert_clean_failure(&out, &["CAP_BPF", "CAP_PERFMON", "root"]);
    let left = common::programs_left_after("process_", Duration::from_secs(2));
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn inspect_embedded_bundle() {
    let out = tapio(&["inspect", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let process = v.as_array().unwrap().iter().find(|o| o["file"] == "process.bpf.o").expect("process object");
    let exec = process["programs"].as_array().unwrap().iter().find(|p| p["name"] == "process_exec").unwrap();
    assert_eq!(exec["program_type"], "tracepoint");
    assert_eq!(exec["attach_target"], "sched/sched_process_exec");
    assert!(exec["instructions"].as_u64().unwrap() > 10);
    assert!(exec["helpers"].as_array().unwrap().iter().any(|h| h == "bpf_ringbuf_output"));
    assert!(process["core_relocations"].as_u64().unwrap() > 0);
    let maps = process["maps"].as_array().unwrap();
    assert!(maps.iter().any(|m| m["name"] == "events" && m["map_type"] == "ringbuf"));
}

/// A kernel BTF that is there but does not parse stops the run with its cause, before any
/// object loads. aya's loader would take such a BTF for none and load unrelocated (every CO-RE
/// field read at the offset the probe was compiled with), so the run parses it up front even
/// though each loader parses it again (run/load.rs, external_btf). The file is replaced by a
/// corrupt one in a mount namespace of the agent's own; a run that did not stop is ended by
/// `timeout` and fails the assertion.
#[test]
fn a_corrupt_kernel_btf_stops_the_run_before_any_load() {
    const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
    let Ok(real) = std::fs::read(VMLINUX) else {
        common::skip_for_kernel("a_corrupt_kernel_btf_stops_the_run_before_any_load", &tapio_kernel_gates::Needs::one("vmlinux btf"), format!("no {VMLINUX}"));
        return;
    };
    if common::skip_unless_root("a_corrupt_kernel_btf_stops_the_run_before_any_load") {
        return;
    }
    let _serial = kernel_lock();
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("vmlinux");
    // The header and the first types, cut mid-way: the header's lengths point past the end.
    std::fs::write(&corrupt, &real[..real.len() / 2]).unwrap();
    let script = format!("mount --bind {} {VMLINUX} && exec timeout -s TERM 20 \"$0\" run --monitors process", corrupt.display());
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(env!("CARGO_BIN_EXE_tapio-load"))
        .output()
        .expect("unshare (util-linux)");
    assert_clean_failure(&out, &["btf", VMLINUX]);
    let left = common::programs_left_after("process_", Duration::from_secs(2));
    assert!(left.is_empty(), "{left:?}");
}
