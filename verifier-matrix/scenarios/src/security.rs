//! security/cred_ns: credential changes, process injection and a mount in a new mount namespace,
//! done by an actor process (the agent re-executed as `security-actor`, so it is single-threaded
//! and may fork and change its credentials freely) on a grandchild it forked.
//!
//! What the actor does, in order: ptrace-attaches to the grandchild and pokes a word into it,
//! writes another word with process_vm_writev (the grandchild exits 0 only if both landed), moves
//! its effective gid and uid to 1234, fails to unshare there (no CAP_SYS_ADMIN: EPERM), moves them
//! back, forks a dropper that moves every uid to 1234 and is refused (EPERM) the way back to 0,
//! then unshares its mount namespace, makes its mounts private and mounts a tmpfs, the last
//! two inside the new namespace (`in_container`).
//!
//! `capability` events are left out of the snapshot: fexit gives the check's verdict and the
//! kprobe path does not, and the number of capable() calls a syscall makes is the kernel's own
//! business, so they differ by kernel without any defect. `checks.rs` checks one capability
//! event on its own.

use std::{
    ffi::CString,
    io,
    process::{Command, ExitCode, Stdio},
    sync::atomic::{AtomicU64, Ordering},
};

use serde_json::{json, Value};
use tapio_runtime::monitors::LoadedMonitor;
use tapio_testkit::snapshot::Roles;

use super::{check, collect, current_exe, discard, lost, monitor, snapshot, EVENT_WAIT};
use crate::Outcome;

const SCENARIO: &str = "cred_ns";
/// Where the actor mounts its tmpfs: the same path in every guest and on the host, so the
/// snapshot is too. Created by the agent; the mount lives only in the actor's namespace.
const MOUNT_TARGET: &str = "/tmp/tapio-cred-ns";
const OTHER_ID: u32 = 1234;
/// The words the actor puts into the grandchild.
const POKED: u64 = 0x7461_7069_6f50_4f4b;
const WRITTEN: u64 = 0x7461_7069_6f56_4d57;
/// The actor and its grandchild give up (SIGALRM) after this many seconds, so a stuck ptrace
/// stop cannot hang the guest.
const ALARM_SECS: u32 = 10;

/// Targets of the injection; the grandchild, a fork of the actor, has them at the same address.
static POKE_TARGET: AtomicU64 = AtomicU64::new(0);
static WRITEV_TARGET: AtomicU64 = AtomicU64::new(0);

/// Integer arguments of the variadic `syscall()` must be full registers: a bare literal is an
/// `int`, whose upper half the callee may read as garbage (process_vm_writev then sees flags).
pub(super) const ZERO: libc::c_long = 0;
const ONE: libc::c_long = 1;

/// `rc`, or the OS error it stands for, named by `what`.
pub(super) fn sys(what: &str, rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::other(format!("{what}: {}", io::Error::last_os_error())))
    } else {
        Ok(rc)
    }
}

/// The actor: runs the scenario and prints one JSON line with its results for the agent.
pub fn actor() -> ExitCode {
    actor_result(actor_steps())
}

/// Moves the caller into a new mount namespace whose mounts are all private, so that what it
/// mounts next stays there (a shared root would carry it back into the initial namespace).
pub(super) fn private_mount_ns() -> io::Result<()> {
    let private = libc::MS_REC | libc::MS_PRIVATE;
    // SAFETY: unshare takes flags; "/" is NUL-terminated and the other pointers may be NULL.
    unsafe {
        sys("unshare", libc::unshare(libc::CLONE_NEWNS).into())?;
        sys("mount private", libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), private, std::ptr::null()).into())?;
    }
    Ok(())
}

/// Runs the agent re-executed as `role` (an actor, which ends by itself or by its own alarm, so
/// this cannot wait forever) and returns the JSON line it printed; a failed spawn, an unreadable
/// line or a failed exit is a value with an `error`.
pub(super) fn run_actor(exe: &str, role: &str) -> Value {
    let output = Command::new(exe).arg(role).stdin(Stdio::null()).stderr(Stdio::inherit()).output();
    let mut report: Value = match &output {
        Ok(o) => serde_json::from_slice(&o.stdout).unwrap_or_else(|e| json!({ "error": format!("actor output: {e}") })),
        Err(e) => json!({ "error": format!("spawn the actor: {e}") }),
    };
    if let Ok(o) = &output {
        if !o.status.success() && report.get("error").is_none() {
            report = json!({ "error": format!("actor {role}: {}", o.status), "report": report });
        }
    }
    report
}

/// Prints an actor's results (or its error) as the one JSON line its agent reads.
pub(super) fn actor_result(result: io::Result<Value>) -> ExitCode {
    match result {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", json!({ "error": e.to_string() }));
            ExitCode::FAILURE
        }
    }
}

fn actor_steps() -> io::Result<Value> {
    // SAFETY: alarm has no preconditions.
    unsafe { libc::alarm(ALARM_SECS) };
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for the two descriptors pipe writes.
    sys("pipe", unsafe { libc::pipe(fds.as_mut_ptr()) }.into())?;
    // SAFETY: the actor is single-threaded (a fresh exec), so the child may run any code.
    let target = unsafe { libc::fork() };
    if target == 0 {
        // SAFETY: alarm, read, close and _exit have no preconditions beyond valid fds.
        unsafe {
            libc::alarm(ALARM_SECS);
            libc::close(fds[1]);
            // Waits for the go (or end-of-file if the actor died); EINTR from the ptrace stop
            // is restarted by the kernel.
            let mut b = 0u8;
            libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
            let ok = POKE_TARGET.load(Ordering::SeqCst) == POKED && WRITEV_TARGET.load(Ordering::SeqCst) == WRITTEN;
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    sys("fork", target.into())?;
    // SAFETY: fds[0] is ours to close.
    unsafe { libc::close(fds[0]) };
    let pid = target as libc::c_long;
    let poke_addr = POKE_TARGET.as_ptr() as libc::c_long;
    let writev_addr = WRITEV_TARGET.as_ptr() as libc::c_long;
    let mut status = 0;
    // SAFETY: raw ptrace and waitpid on our own child; POKEDATA writes one word at an address
    // that is mapped in the child (the same static as ours, inherited by fork).
    unsafe {
        sys("ptrace attach", libc::syscall(libc::SYS_ptrace, libc::c_long::from(libc::PTRACE_ATTACH as i32), pid, ZERO, ZERO))?;
        sys("waitpid", libc::waitpid(target, &mut status, 0).into())?;
        sys("ptrace poke", libc::syscall(libc::SYS_ptrace, libc::c_long::from(libc::PTRACE_POKEDATA as i32), pid, poke_addr, POKED as libc::c_long))?;
        sys("ptrace detach", libc::syscall(libc::SYS_ptrace, libc::c_long::from(libc::PTRACE_DETACH as i32), pid, ZERO, ZERO))?;
    }
    let word = WRITTEN;
    let local = libc::iovec { iov_base: (&word as *const u64).cast_mut().cast(), iov_len: 8 };
    let remote = libc::iovec { iov_base: writev_addr as *mut libc::c_void, iov_len: 8 };
    // SAFETY: both iovecs describe 8 valid bytes (ours readable, the child's mapped).
    let written = sys("process_vm_writev", unsafe {
        libc::syscall(libc::SYS_process_vm_writev, pid, &local as *const libc::iovec, ONE, &remote as *const libc::iovec, ONE, ZERO)
    })?;
    // SAFETY: fds[1] is the pipe's write end; waitpid on our own child.
    let target_exit = unsafe {
        libc::write(fds[1], [1u8].as_ptr().cast(), 1);
        libc::close(fds[1]);
        sys("waitpid", libc::waitpid(target, &mut status, 0).into())?;
        if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 }
    };

    // Effective ids away and back: the real and saved ids stay 0, so the way back is allowed.
    let unchanged = libc::c_long::from(-1i32);
    let other = libc::c_long::from(OTHER_ID);
    // SAFETY: set*id and unshare take integers only.
    let denied = unsafe {
        sys("setresgid", libc::syscall(libc::SYS_setresgid, unchanged, other, unchanged))?;
        sys("setresuid", libc::syscall(libc::SYS_setresuid, unchanged, other, unchanged))?;
        // Without CAP_SYS_ADMIN (dropped with euid 0): must fail with EPERM.
        let rc = libc::unshare(libc::CLONE_NEWNS);
        let errno = io::Error::last_os_error().raw_os_error();
        sys("setresuid back", libc::syscall(libc::SYS_setresuid, unchanged, ZERO, unchanged))?;
        sys("setresgid back", libc::syscall(libc::SYS_setresgid, unchanged, ZERO, unchanged))?;
        (rc, errno)
    };

    // A child of the actor drops every uid to OTHER_ID (root may), then asks for uid 0 back,
    // which OTHER_ID may not have (EPERM). A child, because the drop cannot be undone.
    // SAFETY: the actor is single-threaded, so the child may run any code; it makes raw
    // syscalls and leaves with _exit.
    let dropper = unsafe { libc::fork() };
    if dropper == 0 {
        // SAFETY: as above.
        unsafe {
            libc::alarm(ALARM_SECS);
            let code = if libc::syscall(libc::SYS_setuid, other) != 0 {
                1
            } else if libc::syscall(libc::SYS_setuid, ZERO) != -1 || io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
                2
            } else {
                0
            };
            libc::_exit(code);
        }
    }
    sys("fork", dropper.into())?;
    // SAFETY: waitpid on our own child.
    let dropper_exit = unsafe {
        sys("waitpid", libc::waitpid(dropper, &mut status, 0).into())?;
        if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 }
    };

    let c = |s: &str| CString::new(s).expect("no NUL");
    let (target_dir, tmpfs, source, data) = (c(MOUNT_TARGET), c("tmpfs"), c("tapio-tmpfs"), c("size=1m"));
    private_mount_ns()?;
    // SAFETY: valid NUL-terminated strings.
    unsafe {
        sys(
            "mount tmpfs",
            libc::mount(source.as_ptr(), target_dir.as_ptr(), tmpfs.as_ptr(), libc::MS_NOSUID | libc::MS_NODEV, data.as_ptr().cast())
                .into(),
        )?;
    }
    Ok(json!({
        "actor": std::process::id(), "target": target, "target_exit": target_exit, "written": written,
        "poke_addr": poke_addr, "denied_rc": denied.0, "denied_errno": denied.1,
        "dropper": dropper, "dropper_exit": dropper_exit,
    }))
}

pub fn run(out: &mut Outcome, loaded: &mut [LoadedMonitor]) {
    let Some(m) = monitor(out, loaded, "security", "security.cred_ns") else { return };
    discard(m);
    let lost_before = lost(m);
    if let Err(e) = std::fs::create_dir_all(MOUNT_TARGET) {
        return check(out, "security.cred_ns.actor", false, format!("create {MOUNT_TARGET}: {e}"));
    }
    let exe = current_exe();
    let report = run_actor(&exe, "security-actor");
    let _ = std::fs::remove_dir(MOUNT_TARGET);
    let ok = report.get("error").is_none();
    check(out, "security.cred_ns.actor", ok, report.to_string());
    if !ok {
        return;
    }
    let (actor, target) = (report["actor"].as_u64().unwrap_or(0), report["target"].as_u64().unwrap_or(0));
    let dropper = report["dropper"].as_u64().unwrap_or(0);
    check(
        out,
        "security.cred_ns.injection_landed",
        report["target_exit"] == 0 && report["written"] == 8,
        format!("grandchild exit {} (0: both words arrived), process_vm_writev wrote {}", report["target_exit"], report["written"]),
    );
    check(
        out,
        "security.cred_ns.unshare_denied",
        report["denied_rc"] == -1 && report["denied_errno"] == libc::EPERM,
        format!("unshare as euid {OTHER_ID}: rc {}, errno {}", report["denied_rc"], report["denied_errno"]),
    );

    check(
        out,
        "security.cred_ns.setuid_back_denied",
        report["dropper_exit"] == 0,
        format!("the dropper's exit {} (0: setuid({OTHER_ID}) worked, setuid(0) got EPERM)", report["dropper_exit"]),
    );

    // Each event is sent at its syscall's exit, before the actor went on: all are in the ring.
    let ours = |e: &tapio_decode::events::Event| [actor, target, dropper].contains(&u64::from(e.tgid)) && e.event != "capability";
    let c = collect(m, ours, |_| true, EVENT_WAIT);
    let dropped = lost(m) - lost_before;
    let mut values = c.values();
    super::relative_in_container(&mut values);
    check(out, "security.cred_ns.decode", c.errors.is_empty() && dropped == 0, format!("{} events, {dropped} lost, errors: {:?}", values.len(), c.errors));
    key_checks(out, &values, actor, target, report["poke_addr"].as_u64().unwrap_or(0));
    dropper_checks(out, &values, dropper);
    let roles = Roles {
        pids: vec![(actor, "actor".to_owned()), (target, "target".to_owned()), (dropper, "dropper".to_owned())],
        exe,
        ports: Vec::new(),
        cgroups: crate::own_cgroups(),
    };
    snapshot(out, "security", SCENARIO, &values, &roles);
}

fn key_checks(out: &mut Outcome, values: &[Value], actor: u64, target: u64, poke_addr: u64) {
    let one = |f: &dyn Fn(&Value) -> bool| values.iter().filter(|v| v["tgid"] == actor && f(v)).count() == 1;
    let unchanged_real = |v: &Value| v["old_uid"] == 0 && v["old_suid"] == 0 && v.get("new_uid").is_none() && v.get("new_suid").is_none();
    let cases: [(&str, bool); 9] = [
        ("ptrace_attach", one(&|v| v["event"] == "ptrace" && v["request"] == "PTRACE_ATTACH" && v["target_pid"] == target && v["result"] == 0)),
        ("ptrace_poke", one(&|v| v["event"] == "ptrace" && v["request"] == "PTRACE_POKEDATA" && v["target_pid"] == target && v["addr"] == poke_addr && v["result"] == 0)),
        ("process_vm_writev", one(&|v| v["event"] == "process_vm_writev" && v["target_pid"] == target && v["local_iovcnt"] == 1 && v["remote_iovcnt"] == 1 && v["result"] == 8)),
        ("setresgid", one(&|v| v["syscall"] == "setresgid" && v["new_egid"] == OTHER_ID && v["old_egid"] == 0 && v.get("new_gid").is_none() && v["result"] == 0)),
        ("setresuid", one(&|v| v["syscall"] == "setresuid" && v["new_euid"] == OTHER_ID && v["old_euid"] == 0 && unchanged_real(v) && v["old_egid"] == OTHER_ID && v["result"] == 0)),
        ("setresuid_back", one(&|v| v["syscall"] == "setresuid" && v["new_euid"] == 0 && v["old_euid"] == OTHER_ID && unchanged_real(v) && v["result"] == 0)),
        ("unshare_denied", one(&|v| v["event"] == "unshare" && v["namespaces"] == json!(["mnt"]) && v["result"] == -i64::from(libc::EPERM))),
        ("unshare", one(&|v| v["event"] == "unshare" && v["namespaces"] == json!(["mnt"]) && v["result"] == 0 && v["in_container"] == false)),
        ("mount_in_container", one(&|v| v["event"] == "mount" && v["target"] == MOUNT_TARGET && v["fstype"] == "tmpfs" && v["source"] == "tapio-tmpfs" && v["in_container"] == true && v["result"] == 0)),
    ];
    for (name, pass) in cases {
        check(out, &format!("security.cred_ns.{name}"), pass, format!("{} events of the actor", values.len()));
    }
    let quiet = values.iter().all(|v| v["tgid"] != target);
    check(out, "security.cred_ns.target_quiet", quiet, "the grandchild makes no security call".to_owned());
}

/// The dropper's two setuid calls: to OTHER_ID (every uid moves, from 0), then back to 0, refused
/// with -EPERM and leaving the uids at OTHER_ID; nothing else.
fn dropper_checks(out: &mut Outcome, values: &[Value], dropper: u64) {
    let setuids: Vec<&Value> = values.iter().filter(|v| v["tgid"] == dropper).collect();
    let drop = |v: &Value| v["syscall"] == "setuid" && v["old_uid"] == 0 && v["new_uid"] == OTHER_ID && v["result"] == 0;
    let refused = |v: &Value| {
        v["syscall"] == "setuid" && v["old_uid"] == OTHER_ID && v["new_uid"] == 0 && v["result"] == -i64::from(libc::EPERM)
    };
    let detail = format!("the dropper's events: {setuids:?}");
    check(out, "security.cred_ns.setuid_drop", setuids.first().is_some_and(|v| drop(v)), detail.clone());
    check(out, "security.cred_ns.setuid_refused", setuids.len() == 2 && refused(setuids[1]), detail);
}
