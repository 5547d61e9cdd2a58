//! The skip policy of the real-kernel tests (issue 15, item 11): under `make test` a skip for the
//! environment fails its test, a skip for a fact of the kernel passes, and both are listed.

mod common;

use std::process::Command;

use common::skip::{skip, Why};

#[test]
#[ignore = "run in a child process by strict_skips_fail_unless_the_kernel_explains_them"]
fn child_skips_for_the_environment() {
    skip("child_skips_for_the_environment", Why::Environment("needs root".to_owned()));
}

#[test]
#[ignore = "run in a child process by strict_skips_fail_unless_the_kernel_explains_them"]
fn child_skips_for_the_kernel() {
    skip("child_skips_for_the_kernel", Why::Kernel("vmlinux btf unsupported (requires >= 5.4)".to_owned()));
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
fn strict_skips_fail_unless_the_kernel_explains_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("skips.txt");
    assert!(!child("child_skips_for_the_environment", true, &log), "an environment skip passed under make test");
    assert!(child("child_skips_for_the_kernel", true, &log), "a kernel skip failed under make test");
    assert!(child("child_skips_for_the_environment", false, &log), "outside make test an environment skip is a skip");
    let listed = std::fs::read_to_string(&log).expect("the skip log");
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        [
            "SKIP child_skips_for_the_environment: needs root",
            "SKIP child_skips_for_the_kernel: vmlinux btf unsupported (requires >= 5.4)",
            "SKIP child_skips_for_the_environment: needs root",
        ]
    );
}
