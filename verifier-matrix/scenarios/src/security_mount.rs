//! security/mount_api: mounts made through the new mount API (5.2+), as util-linux 2.39+
//! `mount(8)` makes them, by an actor (the agent re-executed as `security-mount-actor`) inside
//! its own private mount namespace.
//!
//! What the actor does (`tapio_testkit::workload::mount_api`, the same workload the loader's
//! real-kernel test runs): fsopen("tmpfs"), fsconfig("source"), fsconfig(FSCONFIG_CMD_CREATE),
//! fsmount, move_mount onto [`FS_TARGET`]; then open_tree(OPEN_TREE_CLONE) of that tree and
//! move_mount of the copy onto [`BIND_TARGET`] (a bind mount). Wanted: two `detached_mount` events
//! (fsmount, open_tree) and two `mount` events (the move_mounts), each move_mount with its target
//! and the source, fstype and origin of what it attached, all `in_container`.
//!
//! The actor closes every fd above stderr first, so the kernel hands it 3, 4 and 5 on every
//! kernel and on the host row, and the snapshot can show them.

use std::{
    io,
    process::ExitCode,
};

use serde_json::{json, Value};
use tapio_runtime::monitors::LoadedMonitor;
use tapio_testkit::{snapshot::Roles, workload};
use tapio_matrix_protocol::Line;

use super::{
    check, collect, current_exe, discard, lost, monitor,
    security::{actor_result, private_mount_ns, run_actor, sys, ZERO},
    snapshot, EVENT_WAIT,
};
use crate::Outcome;

const SCENARIO: &str = "mount_api";
/// Where the tmpfs and its bind copy are attached: the same paths in every guest and on the host,
/// so the snapshot is too. Created by the agent; the mounts live only in the actor's namespace.
const FS_TARGET: &str = "/tmp/tapio-mount-api";
const BIND_TARGET: &str = "/tmp/tapio-mount-bind";
const SOURCE: &str = "tapio-mount-api";
/// The actor gives up (SIGALRM) after this many seconds.
const ALARM_SECS: u32 = 10;
/// include/uapi/linux/fcntl.h and magic.h.
const AT_FDCWD: i64 = libc::AT_FDCWD as i64;
const TMPFS_MAGIC: i64 = libc::TMPFS_MAGIC;
/// include/uapi/linux/mount.h.
const MOVE_MOUNT_F_EMPTY_PATH: u64 = 0x4;
const OPEN_TREE_CLONE: u64 = 0x1;

/// The actor: runs the scenario and prints one JSON line with its results for the agent.
pub fn actor() -> ExitCode {
    actor_result(actor_steps())
}

fn actor_steps() -> io::Result<Value> {
    // SAFETY: alarm has no preconditions; close_range (5.9+) closes fds this process does not use.
    unsafe {
        libc::alarm(ALARM_SECS);
        libc::syscall(libc::SYS_close_range, 3 as libc::c_long, libc::c_long::from(u32::MAX), ZERO);
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (source, fs_target, bind_target) = (c(SOURCE), c(FS_TARGET), c(BIND_TARGET));
    private_mount_ns()?;
    let fds = workload::mount_api(&source, &fs_target, &bind_target).map_err(|e| io::Error::other(e.to_string()))?;
    // SAFETY: statfs fills `st`; the path is NUL-terminated.
    let bind_fs = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        sys("statfs", libc::statfs(bind_target.as_ptr(), &mut st).into())?;
        st.f_type as i64
    };
    Ok(json!({
        "actor": std::process::id(), "fs_fd": fds.fs_fd, "mount_fd": fds.mount_fd, "tree_fd": fds.tree_fd, "bind_fs": bind_fs,
    }))
}

pub fn run(out: &mut Outcome, loaded: &mut [LoadedMonitor]) {
    let name = |what: &str| format!("security.{SCENARIO}.{what}");
    let Some(m) = monitor(out, loaded, "security", &format!("security.{SCENARIO}")) else { return };
    if let Some((_, why)) = m.unavailable.iter().find(|(set, _)| *set == "new_mount_api") {
        // A skip, with what the set needs: the harness's judge fails the row unless the kernel
        // explains it (older than 5.2, or a config option off).
        let needs = tapio_runtime::monitors::needs_of(&tapio_runtime::monitors::security::SPEC, "new_mount_api");
        return out.line(&Line::skip(format!("security.{SCENARIO}"), format!("new_mount_api unavailable: {why}"), needs));
    }
    discard(m);
    let lost_before = lost(m);
    let made: Vec<io::Result<()>> = [FS_TARGET, BIND_TARGET].iter().map(std::fs::create_dir_all).collect();
    if let Some(Err(e)) = made.into_iter().find(Result::is_err) {
        return check(out, &name("actor"), false, format!("create {FS_TARGET} and {BIND_TARGET}: {e}"));
    }
    let exe = current_exe();
    let report = run_actor(&exe, "security-mount-actor");
    let _ = (std::fs::remove_dir(FS_TARGET), std::fs::remove_dir(BIND_TARGET));
    let ok = report.get("error").is_none();
    check(out, &name("actor"), ok, report.to_string());
    if !ok {
        return;
    }
    let actor = report["actor"].as_u64().unwrap_or(0);
    check(out, &name("bind_landed"), report["bind_fs"] == TMPFS_MAGIC, format!("{BIND_TARGET} is fs type {:#x} (tmpfs: {TMPFS_MAGIC:#x})", report["bind_fs"].as_i64().unwrap_or(0)));

    // Each event is sent at its syscall's exit, before the actor went on: all are in the ring.
    let ours = |e: &tapio_decode::events::Event| u64::from(e.tgid) == actor && e.event != "capability";
    let c = collect(m, ours, |_| true, EVENT_WAIT);
    let dropped = lost(m) - lost_before;
    let mut values = c.values();
    super::relative_in_container(&mut values);
    check(out, &name("decode"), c.errors.is_empty() && dropped == 0, format!("{} events, {dropped} lost, errors: {:?}", values.len(), c.errors));
    key_checks(out, &values, &report);
    let roles = Roles { pids: vec![(actor, "actor".to_owned())], exe, ports: Vec::new(), cgroups: crate::own_cgroups() };
    snapshot(out, "security", SCENARIO, &values, &roles);
}

fn key_checks(out: &mut Outcome, values: &[Value], report: &Value) {
    let (fs_fd, mount_fd, tree_fd) = (&report["fs_fd"], &report["mount_fd"], &report["tree_fd"]);
    let one = |f: &dyn Fn(&Value) -> bool| values.iter().filter(|v| v["in_container"] == true && f(v)).count() == 1;
    let cases: [(&str, bool); 4] = [
        (
            "fsmount",
            one(&|v| {
                v["event"] == "detached_mount"
                    && v["syscall"] == "fsmount"
                    && v["fstype"] == "tmpfs"
                    && v["source"] == SOURCE
                    && v["fs_fd"] == *fs_fd
                    && v["attr_flags"] == workload::mount_api_abi::MOUNT_ATTR_NOSUID
                    && v["result"] == *mount_fd
                    // A detached mount has no target.
                    && v.get("target").is_none()
            }),
        ),
        (
            "move_mount_fsmount",
            one(&|v| {
                v["event"] == "mount"
                    && v["syscall"] == "move_mount"
                    && v["target"] == FS_TARGET
                    && v["source"] == SOURCE
                    && v["fstype"] == "tmpfs"
                    && v["detached_by"] == "fsmount"
                    && v["from_dfd"] == *mount_fd
                    && v["to_dfd"] == AT_FDCWD
                    && v["flags"] == MOVE_MOUNT_F_EMPTY_PATH
                    && v["result"] == 0
            }),
        ),
        (
            "open_tree_clone",
            one(&|v| {
                v["event"] == "detached_mount"
                    && v["syscall"] == "open_tree"
                    && v["source"] == FS_TARGET
                    && v["fstype"] == ""
                    && v["dfd"] == AT_FDCWD
                    && v["flags"].as_u64().is_some_and(|f| f & OPEN_TREE_CLONE != 0)
                    && v["result"] == *tree_fd
            }),
        ),
        (
            "move_mount_bind",
            one(&|v| {
                v["event"] == "mount"
                    && v["syscall"] == "move_mount"
                    && v["target"] == BIND_TARGET
                    && v["source"] == FS_TARGET
                    && v["fstype"] == ""
                    && v["detached_by"] == "open_tree"
                    && v["from_dfd"] == *tree_fd
                    && v["result"] == 0
            }),
        ),
    ];
    for (what, pass) in cases {
        check(out, &format!("security.{SCENARIO}.{what}"), pass, format!("{} events of the actor", values.len()));
    }
    // fsopen and fsconfig send no event: the API's events are these four and no more.
    let api = values.iter().filter(|v| (v["event"] == "mount" || v["event"] == "detached_mount") && v["syscall"] != "mount").count();
    check(out, &format!("security.{SCENARIO}.api_events"), api == 4, format!("{api} mount-API events (want fsmount, open_tree and two move_mounts)"));
}
