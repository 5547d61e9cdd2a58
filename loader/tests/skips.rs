//! The skip policy of the real-kernel tests (issue 15, items 9 and 11): a skip for the kernel
//! stands only when the kernel explains it, named on the skip's line; on a kernel that should have
//! the feature it fails, under `make test` or not (cilium/ebpf's `checkVersion`). Under `make
//! test` a skip for the environment fails its test too. Every skip is listed.

mod common;

use std::process::Command;

use common::skip::{skip, Why};
use tapio_kernel_gates::{KernelConfig, KernelFacts, KernelVersion, Needs, ProbeAnswer};

/// A kernel as this project's CI host is: 6.18, kprobes and modules off, fentry refused by policy.
fn host_like() -> KernelFacts {
    KernelFacts {
        running: KernelVersion::parse("6.18.44-fc-v1300"),
        arch: None,
        config: Some(KernelConfig::parse(
            "CONFIG_DEBUG_INFO_BTF=y\nCONFIG_BPF_JIT=y\nCONFIG_FUNCTION_TRACER=y\n# CONFIG_KPROBES is not set\n",
            "test config",
        )),
        probes: [("fentry".to_owned(), ProbeAnswer::Refused { errno: libc::EPERM, message: "program load".to_owned() })]
            .into_iter()
            .collect(),
    }
}

#[test]
#[ignore = "run in a child process by kernel_skips_stand_only_when_the_kernel_explains_them"]
fn child_skips_for_the_environment() {
    skip("child_skips_for_the_environment", Why::Environment("needs root".to_owned()));
}

#[test]
#[ignore = "run in a child process by kernel_skips_stand_only_when_the_kernel_explains_them"]
fn child_skips_below_the_version() {
    let facts = KernelFacts { running: KernelVersion::parse("5.4.0-1"), ..Default::default() };
    skip("child_skips_below_the_version", Why::kernel("no ring buffer", &Needs::one("ring buffer"), &facts));
}

#[test]
#[ignore = "run in a child process by kernel_skips_stand_only_when_the_kernel_explains_them"]
fn child_skips_for_config_and_policy() {
    let needs = Needs::any(&[&["fentry"], &["kprobe"]]);
    skip("child_skips_for_config_and_policy", Why::kernel("connect_attempt unavailable", &needs, &host_like()));
}

#[test]
#[ignore = "run in a child process by kernel_skips_stand_only_when_the_kernel_explains_them"]
fn child_skips_unexplained() {
    // 6.18 has a ring buffer, and nothing in these facts says why it would not.
    skip("child_skips_unexplained", Why::kernel("no ring buffer", &Needs::one("ring buffer"), &host_like()));
}

fn child(test: &str, strict: bool, log: &std::path::Path) -> bool {
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--ignored", "--exact", test, "--test-threads", "1"]).env("TAPIO_SKIP_LOG", log);
    if strict {
        cmd.env("TAPIO_STRICT_SKIPS", "1");
    } else {
        cmd.env_remove("TAPIO_STRICT_SKIPS");
    }
    cmd.output().expect("run the child test").status.success()
}

#[test]
fn kernel_skips_stand_only_when_the_kernel_explains_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("skips.txt");
    assert!(!child("child_skips_for_the_environment", true, &log), "an environment skip passed under make test");
    assert!(child("child_skips_below_the_version", true, &log), "a skip below the feature's version failed");
    assert!(child("child_skips_for_config_and_policy", true, &log), "a skip the config and policy explain failed");
    assert!(!child("child_skips_unexplained", true, &log), "an unexplained skip passed under make test");
    assert!(!child("child_skips_unexplained", false, &log), "an unexplained skip passed outside make test");
    assert!(child("child_skips_for_the_environment", false, &log), "outside make test an environment skip is a skip");
    let listed = std::fs::read_to_string(&log).expect("the skip log");
    let unexplained = "SKIP child_skips_unexplained: no ring buffer (UNEXPLAINED: ring buffer is in every kernel since \
                       5.8 (running 6.18.44) and nothing explains its absence (no config option gates it; not probed))";
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        [
            "SKIP child_skips_for_the_environment: needs root",
            "SKIP child_skips_below_the_version: no ring buffer (explained: ring buffer: requires >= 5.8, running 5.4)",
            "SKIP child_skips_for_config_and_policy: connect_attempt unavailable (explained: fentry: runtime policy \
             refuses fentry: EPERM from its minimal probe as root; kprobe: CONFIG_KPROBES is off in the kernel's config)",
            unexplained,
            unexplained,
            "SKIP child_skips_for_the_environment: needs root",
        ]
    );
}
