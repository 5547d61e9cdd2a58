//! The security monitor through the agent: what is about `tapio-load` itself, not about what the
//! kernel programs record. What they record for real syscalls is checked by the shared scenarios
//! (tapio-scenarios), run on this kernel by verifier-matrix/guest/tests/scenarios.rs and in every
//! VM of the matrix:
//! - security.cred_ns: ptrace and process_vm_writev injection, set*id changes, a setuid back to
//!   0 refused with -EPERM, a refused unshare and a tmpfs mount in a new mount namespace;
//! - security.ns_caps_module: capset (dropped and refused), unshare of a mount and a UTS
//!   namespace, setns into both (and with the wrong type), module loads refused;
//! - security.mount_api: fsopen, fsmount, open_tree, move_mount;
//! - security.capability: a granted and a refused CAP_SYS_ADMIN check, through the
//!   `capability:cap_capable` tracepoint where the kernel has it.
//!
//! Here: one event reaches the agent's JSON output, the agent's log says which capability path it
//! took and why module loads are not watched where they cannot be, it exits 0 on SIGTERM and
//! leaves no program loaded.

mod common;

use std::{path::Path, time::Duration};

use common::{kernel_lock, skip_unless_root, Loader};

/// Whether tracefs lists `name` (mounted by the loader or the system).
fn tracefs_lists(name: &str) -> bool {
    ["/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"].iter().any(|d| Path::new(d).join(name).is_dir())
}

#[test]
fn security_monitor_through_the_agent() {
    if skip_unless_root("security_monitor_through_the_agent") {
        return;
    }
    let _serial = kernel_lock();
    // Started first: the loader mounts tracefs when it is not mounted.
    let loader = Loader::start(&["--monitors", "security"]);

    // One event to see on stdout: a forked child unshares its UTS namespace (raw syscalls only
    // after fork; its exit code says whether the unshare worked).
    // SAFETY: the child makes one raw syscall and leaves with _exit.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
    if child == 0 {
        // SAFETY: as above.
        unsafe { libc::_exit(i32::from(libc::unshare(libc::CLONE_NEWUTS) != 0)) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "unshare(CLONE_NEWUTS) failed in the child: {status:#x}");

    let mut seen = Vec::new();
    let last = loader.wait_for(&mut seen, Duration::from_secs(5), |e| {
        e["monitor"] == "security" && e["event"] == "unshare" && e["tgid"] == child
    });
    let (_, stderr, status) = loader.finish();
    assert!(status.success(), "tapio-load exits 0 on SIGTERM: {status}; stderr:\n{stderr}");
    let unshare = last.map(|r| r.event).unwrap_or_else(|| panic!("the child's unshare never reached stdout; stderr:\n{stderr}"));
    assert_eq!(unshare["namespaces"], serde_json::json!(["uts"]), "{unshare}");

    // The log names the capability path taken: the tracepoint where the kernel has it (6.14+).
    if tracefs_lists("capability/cap_capable") {
        assert!(
            stderr.contains("sec_capable_tp") && stderr.contains("raw_tracepoint:cap_capable"),
            "the tracepoint path is the one taken; stderr:\n{stderr}"
        );
        assert!(!stderr.contains("capability: unavailable"), "stderr:\n{stderr}");
    } else {
        common::skip_for_kernel(
            "security_monitor_through_the_agent: cap_capable tracepoint path",
            &tapio_kernel_gates::Needs::one("cap_capable tracepoint"),
            "tracefs does not list capability/cap_capable",
        );
    }
    // Without CONFIG_MODULES the log says why module loads are not watched.
    if !tracefs_lists("syscalls/sys_enter_init_module") {
        assert!(
            stderr.contains("init_module: unavailable") && stderr.contains("CONFIG_MODULES"),
            "the loader says why module loads are not watched; stderr:\n{stderr}"
        );
    }

    let left = common::programs_left_after("sec_", Duration::from_secs(2));
    assert!(left.is_empty(), "programs left loaded after exit: {left:?}");
}
