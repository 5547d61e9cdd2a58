//! A fresh machine boots without tracefs mounted; loading a monitor through the library must
//! mount it, as `run` does. The test re-runs this test binary in a private mount namespace where
//! tracefs (and debugfs's `tracing` automount) is unmounted, and loads tracepoint monitors there.
//! The host's mounts are not touched: the namespace's mounts are private copies.

mod common;

use std::{
    ffi::CString,
    os::unix::process::CommandExt,
    path::Path,
    process::Command,
};

use tapio_runtime::monitors::{self, advanced, process, LoadOptions};

/// Env var set for the child: the inner test runs only where its parent prepared the namespace.
const INSIDE: &str = "TAPIO_TEST_PRIVATE_MNTNS";
const INNER_TEST: &str = "inside_a_mount_namespace_without_tracefs";

/// Unmounts every mount stacked on `path` (tests may have mounted tracefs twice); lazy, so a
/// busy mount goes too. Only ever called in the child's private namespace.
fn umount_all(path: &str) -> std::io::Result<()> {
    let c = CString::new(path).expect("no NUL");
    loop {
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: not a mount point (any more); ENOENT: no such directory.
            return match e.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
                _ => Err(e),
            };
        }
    }
}

#[test]
fn tracepoint_monitors_load_where_tracefs_is_not_mounted() {
    if common::skip_unless_root("tracepoint_monitors_load_where_tracefs_is_not_mounted") {
        return;
    }
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.args(["--exact", INNER_TEST, "--ignored", "--nocapture", "--test-threads=1"]).env(INSIDE, "1");
    // SAFETY: between fork and exec the closure makes only syscalls (unshare, mount, umount2)
    // and allocates nothing but the CStrings built in umount_all, which the child owns alone.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Private, recursively: nothing unmounted here propagates back to the host.
            let root = CString::new("/").expect("no NUL");
            if libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            umount_all("/sys/kernel/debug/tracing")?;
            umount_all("/sys/kernel/debug")?;
            umount_all("/sys/kernel/tracing")?;
            Ok(())
        });
    }
    let out = cmd.output().expect("run the test binary in a private mount namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("loaded without tracefs") && stdout.contains("test result: ok. 1 passed"),
        "loading without tracefs failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

/// Runs only in the namespace [`tracepoint_monitors_load_where_tracefs_is_not_mounted`] makes.
#[test]
#[ignore = "run by tracepoint_monitors_load_where_tracefs_is_not_mounted in a private mount namespace"]
fn inside_a_mount_namespace_without_tracefs() {
    assert_eq!(std::env::var(INSIDE).as_deref(), Ok("1"), "run through tracepoint_monitors_load_where_tracefs_is_not_mounted");
    assert!(!tapio_features::tracefs::mounted(), "tracefs still visible: the namespace was not prepared");
    assert!(!Path::new("/sys/kernel/tracing/events").exists(), "tracefs still mounted at /sys/kernel/tracing");
    tapio_features::privileges::raise_memlock();
    let btf = aya::Btf::from_sys_fs().expect("kernel BTF");
    // process: classic tracepoints (sched_process_exec, sched_process_exit); advanced: the raw
    // sys_enter tracepoint, looked up in tracefs before its classic fallback.
    let loaded = monitors::load(&process::SPEC, Some(&btf), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("load process without tracefs mounted: {e}"));
    let paths: Vec<&str> = loaded.reports.iter().map(|r| r.path.as_str()).collect();
    assert!(paths.contains(&"tracepoint:sched/sched_process_exec"), "{paths:?}");
    assert!(tapio_features::tracefs::mounted(), "load attached tracepoints but tracefs is not mounted");
    let options = advanced::AdvancedOptions { target_tgid: std::process::id(), ..Default::default() };
    let adv = monitors::load(&advanced::SPEC, Some(&btf), &LoadOptions { advanced: options, ..Default::default() })
        .unwrap_or_else(|e| panic!("load advanced without tracefs mounted: {e}"));
    let paths: Vec<&str> = adv.reports.iter().map(|r| r.path.as_str()).collect();
    assert!(paths.contains(&"raw_tracepoint:sys_enter"), "advanced did not take its raw tracepoint: {paths:?}");
    println!("loaded without tracefs: process {:?}, advanced {paths:?}", loaded.reports.iter().map(|r| &r.path).collect::<Vec<_>>());
}
