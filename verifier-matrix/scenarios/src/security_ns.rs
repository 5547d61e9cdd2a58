//! security/ns_caps_module: capset, setns and module load attempts, done by an actor (the agent
//! re-executed as `security-ns-actor`: single-threaded, as setns into a mount namespace requires)
//! and a namespace holder it forks. A scenario of its own so that cred_ns keeps its meaning.
//!
//! What the actor does, in order: capset down to the three capabilities the rest needs (the
//! permitted set shrinks), a second capset that asks for CAP_SYS_BOOT back and is refused
//! (EPERM), forks the holder (which unshares its UTS namespace, then its mount namespace, and
//! waits), setns into the holder's mount namespace with the wrong type (EINVAL) and with the
//! right one, then, from inside that namespace (`in_container`), setns into the holder's UTS
//! namespace, and init_module and finit_module on an image that is not
//! an ELF object, so nothing is loaded. init_module is given the image's bytes from memory,
//! finit_module a memfd holding them: no file is written, so there is no path to race for or
//! to share between two runs on one host.
//!
//! The refusal checked is the header check's (ENOEXEC). That holds where module signatures are
//! not enforced, as on every kernel of the matrix: its Debian kernels are built with
//! `CONFIG_MODULE_SIG` but without `CONFIG_MODULE_SIG_FORCE` or a forced lockdown, and boot with
//! neither `module.sig_enforce` nor `lockdown=` (verifier-matrix/src/vm/qemu.rs, `BASE_CMDLINE`).
//! A kernel that enforces signatures checks them first (kernel/module/signing.c,
//! `module_sig_check`) and refuses the unsigned image with EKEYREJECTED, or EPERM under lockdown;
//! the check then fails, naming the errno it got.
//!
//! A kernel built without `CONFIG_MODULES` (the host row) has neither the two syscalls (ENOSYS)
//! nor their tracepoints: the loader reports those programs unavailable, the module events cannot
//! happen, and the scenario says SKIP for them; its snapshot is the `@<kernel>` variant that says
//! why. The fd numbers the events carry are fixed with dup2 so that they are the same everywhere;
//! the capability sets the actor starts with depend on who started the agent (the host row's root
//! lacks CAP_SYS_RESOURCE), so they are checked against capget's answer, then shown as a role.

use std::{
    ffi::{CStr, CString},
    io,
    process::ExitCode,
};

use serde_json::{json, Value};
use tapio_runtime::monitors::LoadedMonitor;
use tapio_testkit::snapshot::Roles;

use super::{
    check, collect, current_exe, discard, lost, monitor,
    security::{actor_result, run_actor, sys, ZERO},
    snapshot, EVENT_WAIT,
};
use tapio_matrix_protocol::Line;

use crate::Outcome;

const SCENARIO: &str = "ns_caps_module";
/// The name of the memfd finit_module is given (only shown in /proc/<pid>/fd; names need not be
/// unique).
const MODULE_MEMFD: &CStr = c"tapio-not-a-module";
/// The bytes of the image: no ELF magic, longer than an ELF header (64 bytes), so a kernel that
/// does not enforce signatures gets as far as the header check.
const IMAGE: &[u8; 96] = b"tapio-probes ns_caps_module: this is not a kernel module, so loading it must fail (ENOEXEC).\n\n\n\n";
/// Where the actor keeps the namespace and module fds (dup2), so the events' `fd` is fixed.
const NS_FD: i32 = 100;
const MODULE_FD: i32 = 101;
const UTS_FD: i32 = 102;

/// include/uapi/linux/capability.h.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_SYS_MODULE: u32 = 16;
const CAP_SYS_CHROOT: u32 = 18;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_BOOT: u32 = 22;
/// What the actor keeps: CAP_SYS_ADMIN and CAP_SYS_CHROOT for setns into a mount namespace
/// (fs/namespace.c, mntns_install), CAP_SYS_ADMIN for the holder's unshare, CAP_SYS_MODULE so the
/// module syscalls get past their permission check to the image itself.
const KEEP: u64 = 1 << CAP_SYS_MODULE | 1 << CAP_SYS_CHROOT | 1 << CAP_SYS_ADMIN;
const CLONE_NEWNS: libc::c_long = libc::CLONE_NEWNS as libc::c_long;
const CLONE_NEWNET: libc::c_long = libc::CLONE_NEWNET as libc::c_long;
const CLONE_NEWUTS: libc::c_long = libc::CLONE_NEWUTS as libc::c_long;
/// The actor and the holder give up (SIGALRM) after this many seconds.
const ALARM_SECS: u32 = 10;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`; version 3 takes two (low and high 32 bits).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn cap_data(effective: u64, permitted: u64) -> [CapData; 2] {
    let half = |v: u64, i: u32| (v >> (32 * i)) as u32;
    [0, 1].map(|i| CapData { effective: half(effective, i), permitted: half(permitted, i), inheritable: 0 })
}

/// A syscall's return value and errno (0 when it succeeded), for calls expected to fail.
fn outcome(rc: libc::c_long) -> (libc::c_long, i32) {
    (rc, if rc < 0 { io::Error::last_os_error().raw_os_error().unwrap_or(0) } else { 0 })
}

/// A memfd holding [`IMAGE`], for finit_module. Asked for with `MFD_NOEXEC_SEAL` (the image is
/// never executed), which kernels before 6.3 do not know (EINVAL): there it is asked for again
/// without. kernel_read_file reads a file from offset 0 whatever its position, and refuses only
/// files open for writing through a path (`deny_write_access`), which a memfd's own fd is not.
fn module_memfd() -> io::Result<i32> {
    // SAFETY: the name is NUL-terminated; memfd_create takes it and flags.
    let mut fd = unsafe { libc::memfd_create(MODULE_MEMFD.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_NOEXEC_SEAL) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(MODULE_MEMFD.as_ptr(), libc::MFD_CLOEXEC) };
    }
    let fd = sys("memfd_create for the module image", fd.into())? as i32;
    // SAFETY: IMAGE is readable for its length; fd is ours.
    let written = unsafe { libc::write(fd, IMAGE.as_ptr().cast(), IMAGE.len()) };
    if sys("write the module image", written as libc::c_long)? != IMAGE.len() as libc::c_long {
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        return Err(io::Error::other(format!("write the module image: {written} of {} bytes", IMAGE.len())));
    }
    Ok(fd)
}

/// The actor: runs the scenario and prints one JSON line with its results for the agent.
pub fn actor() -> ExitCode {
    actor_result(actor_steps())
}

fn actor_steps() -> io::Result<Value> {
    // SAFETY: alarm has no preconditions.
    unsafe { libc::alarm(ALARM_SECS) };
    let fd = module_memfd()?;
    // SAFETY: dup2 and close on fds this process owns.
    unsafe {
        sys("dup2 the module image", libc::dup2(fd, MODULE_FD).into())?;
        libc::close(fd);
    }

    // capset: down to KEEP, then a refused request for CAP_SYS_BOOT.
    let header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let mut initial = [CapData::default(); 2];
    let header_ptr = &header as *const CapHeader;
    // SAFETY: header and two data slots, as version 3 wants; capset only reads them.
    let (denied, initial_eff, initial_perm) = unsafe {
        sys("capget", libc::syscall(libc::SYS_capget, header_ptr, initial.as_mut_ptr()))?;
        let eff = u64::from(initial[1].effective) << 32 | u64::from(initial[0].effective);
        let perm = u64::from(initial[1].permitted) << 32 | u64::from(initial[0].permitted);
        let keep = cap_data(KEEP, KEEP);
        sys("capset", libc::syscall(libc::SYS_capset, header_ptr, keep.as_ptr()))?;
        let more = cap_data(KEEP | 1 << CAP_SYS_BOOT, KEEP);
        (outcome(libc::syscall(libc::SYS_capset, header_ptr, more.as_ptr())), eff, perm)
    };

    // The holder: unshares its mount namespace, says so, and waits for the end of the actor's
    // pipe. Forked after capset, so its capabilities are a subset of the actor's and the actor
    // may open its /proc/<pid>/ns files.
    let (mut ready, mut release) = ([0i32; 2], [0i32; 2]);
    // SAFETY: each array has room for the two descriptors pipe writes.
    unsafe {
        sys("pipe", libc::pipe(ready.as_mut_ptr()).into())?;
        sys("pipe", libc::pipe(release.as_mut_ptr()).into())?;
    }
    // SAFETY: the actor is single-threaded, so the child may run any code.
    let holder = unsafe { libc::fork() };
    if holder == 0 {
        // SAFETY: alarm, unshare, read, write, close and _exit on the pipes' fds.
        unsafe {
            libc::alarm(ALARM_SECS);
            libc::close(ready[0]);
            libc::close(release[1]);
            let ok = libc::unshare(libc::CLONE_NEWUTS) == 0 && libc::unshare(libc::CLONE_NEWNS) == 0;
            libc::write(ready[1], [u8::from(ok)].as_ptr().cast(), 1);
            let mut b = 0u8;
            libc::read(release[0], (&mut b as *mut u8).cast(), 1);
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    sys("fork", holder.into())?;
    let mut unshared = 0u8;
    // SAFETY: our ends of the pipes; read fills one byte.
    unsafe {
        libc::close(ready[1]);
        libc::close(release[0]);
        sys("read the holder's word", libc::read(ready[0], (&mut unshared as *mut u8).cast(), 1) as libc::c_long)?;
        libc::close(ready[0]);
    }
    if unshared != 1 {
        return Err(io::Error::other("the holder could not unshare its mount and UTS namespaces"));
    }

    // setns: the wrong type first (the fd is a mount namespace), then into it, then into the
    // holder's UTS namespace.
    let ns_path = CString::new(format!("/proc/{holder}/ns/mnt")).expect("no NUL");
    let uts_path = CString::new(format!("/proc/{holder}/ns/uts")).expect("no NUL");
    let (nsfd, utsfd) = (libc::c_long::from(NS_FD), libc::c_long::from(UTS_FD));
    // SAFETY: the paths are NUL-terminated; setns takes integers.
    let (wrong_type, joined, joined_uts) = unsafe {
        let fd = sys("open the holder's mount namespace", libc::open(ns_path.as_ptr(), libc::O_RDONLY).into())? as i32;
        sys("dup2 the namespace fd", libc::dup2(fd, NS_FD).into())?;
        libc::close(fd);
        let fd = sys("open the holder's UTS namespace", libc::open(uts_path.as_ptr(), libc::O_RDONLY).into())? as i32;
        sys("dup2 the UTS namespace fd", libc::dup2(fd, UTS_FD).into())?;
        libc::close(fd);
        let wrong = outcome(libc::syscall(libc::SYS_setns, nsfd, CLONE_NEWNET));
        let joined = sys("setns", libc::syscall(libc::SYS_setns, nsfd, CLONE_NEWNS))?;
        (wrong, joined, sys("setns uts", libc::syscall(libc::SYS_setns, utsfd, CLONE_NEWUTS))?)
    };

    // Module loads from inside the holder's namespace, both refused.
    let params = CString::new("").expect("no NUL");
    // SAFETY: IMAGE is readable for its length; params is NUL-terminated; the fd is ours.
    let (init, finit) = unsafe {
        let len = IMAGE.len() as libc::c_long;
        let init = outcome(libc::syscall(libc::SYS_init_module, IMAGE.as_ptr(), len, params.as_ptr()));
        let finit = outcome(libc::syscall(libc::SYS_finit_module, libc::c_long::from(MODULE_FD), params.as_ptr(), ZERO));
        (init, finit)
    };

    let mut status = 0;
    // SAFETY: closing our end releases the holder; waitpid on our own child.
    let holder_exit = unsafe {
        libc::close(release[1]);
        sys("waitpid", libc::waitpid(holder, &mut status, 0).into())?;
        if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 }
    };
    Ok(json!({
        "actor": std::process::id(), "holder": holder, "holder_exit": holder_exit,
        "initial_eff": initial_eff, "initial_perm": initial_perm,
        "capset_denied": [denied.0, denied.1], "setns_wrong_type": [wrong_type.0, wrong_type.1], "setns": joined, "setns_uts": joined_uts,
        "init_module": [init.0, init.1], "finit_module": [finit.0, finit.1],
    }))
}

pub fn run(out: &mut Outcome, loaded: &mut [LoadedMonitor]) {
    let name = |what: &str| format!("security.{SCENARIO}.{what}");
    let Some(m) = monitor(out, loaded, "security", &format!("security.{SCENARIO}")) else { return };
    // The module programs are left out only where the kernel has no module support at all.
    let no_modules: Vec<String> =
        m.unavailable.iter().filter(|(p, _)| p.ends_with("init_module")).map(|(p, why)| format!("{p}: {why}")).collect();
    discard(m);
    let lost_before = lost(m);
    let modules_before = std::fs::read_to_string("/proc/modules").ok();
    let exe = current_exe();
    let report = run_actor(&exe, "security-ns-actor");
    let modules_after = std::fs::read_to_string("/proc/modules").ok();
    let ok = report.get("error").is_none();
    check(out, &name("actor"), ok, report.to_string());
    if !ok {
        return;
    }
    let (actor, holder) = (report["actor"].as_u64().unwrap_or(0), report["holder"].as_u64().unwrap_or(0));
    let errno = |e: i32| json!([-1, e]);
    check(
        out,
        &name("syscalls"),
        report["capset_denied"] == errno(libc::EPERM)
            && report["setns_wrong_type"] == errno(libc::EINVAL)
            && report["setns"] == 0
            && report["setns_uts"] == 0
            && report["holder_exit"] == 0,
        format!(
            "capset for CAP_SYS_BOOT {} (want EPERM), setns as net {} (want EINVAL), setns as mnt {}, as uts {}, holder exit {}",
            report["capset_denied"], report["setns_wrong_type"], report["setns"], report["setns_uts"], report["holder_exit"]
        ),
    );
    // With module support the image is refused at its header (where signatures are not
    // enforced: see the module docs); without, the syscalls do not exist.
    let want = if no_modules.is_empty() { libc::ENOEXEC } else { libc::ENOSYS };
    check(
        out,
        &name("module_refused"),
        report["init_module"] == errno(want) && report["finit_module"] == errno(want),
        format!(
            "init_module {}, finit_module {} (want -1 {}); unavailable: {no_modules:?}",
            outcome_text(&report["init_module"]),
            outcome_text(&report["finit_module"]),
            errno_text(want)
        ),
    );
    check(
        out,
        &name("module_nothing_loaded"),
        modules_before == modules_after,
        format!("/proc/modules {} across the attempts", if modules_before.is_some() { "compared" } else { "absent (no CONFIG_MODULES)" }),
    );

    // Each event is sent at its syscall's exit, before the actor went on: all are in the ring.
    let ours = |e: &tapio_decode::events::Event| (u64::from(e.tgid) == actor || u64::from(e.tgid) == holder) && e.event != "capability";
    let c = collect(m, ours, |_| true, EVENT_WAIT);
    let dropped = lost(m) - lost_before;
    let mut values = c.values();
    super::relative_in_container(&mut values);
    check(out, &name("decode"), c.errors.is_empty() && dropped == 0, format!("{} events, {dropped} lost, errors: {:?}", values.len(), c.errors));
    let initial = (report["initial_eff"].clone(), report["initial_perm"].clone());
    key_checks(out, &values, actor, holder, &initial);
    if no_modules.is_empty() {
        let loads: Vec<&Value> = values.iter().filter(|v| v["event"] == "module_load").collect();
        let pass = loads.len() == 2;
        let seen: Vec<String> = loads
            .iter()
            .map(|v| {
                let result = v["result"].as_i64().and_then(|r| i32::try_from(-r).ok()).filter(|e| *e > 0);
                let result = result.map_or_else(|| v["result"].to_string(), errno_text);
                format!("{} {result} in_container={}", v["syscall"].as_str().unwrap_or("?"), v["in_container"])
            })
            .collect();
        let detail = format!("want init_module and finit_module, refused ({}), in_container; seen {seen:?}", errno_text(libc::ENOEXEC));
        check(out, &name("module_load_in_container"), pass && module_checks(&values, actor), detail);
    } else {
        let none = values.iter().all(|v| v["event"] != "module_load");
        if none {
            let reason = format!("module_load unavailable: {}", no_modules[0]);
            let needs = tapio_runtime::monitors::monitor("security")
                .map(|spec| tapio_runtime::monitors::needs_of(spec, "init_module"))
                .unwrap_or_default();
            out.line(&Line::skip(name("module_load_in_container"), reason, needs));
        } else {
            check(out, &name("module_load_in_container"), false, "module events from programs reported unavailable".to_owned());
        }
    }

    // The starting capability sets are the agent's, not the kernel's: shown as a role once checked.
    for v in &mut values {
        if v["syscall"] == "capset" && v["old_cap_effective"] == initial.0 && v["old_cap_permitted"] == initial.1 {
            v["old_cap_effective"] = json!("[caps:initial]");
            v["old_cap_permitted"] = json!("[caps:initial]");
        }
    }
    let roles = Roles { pids: vec![(actor, "actor".to_owned()), (holder, "holder".to_owned())], exe, ports: Vec::new(), cgroups: crate::own_cgroups() };
    snapshot(out, "security", SCENARIO, &values, &roles);
}

fn key_checks(out: &mut Outcome, values: &[Value], actor: u64, holder: u64, initial: &(Value, Value)) {
    let one = |tgid: u64, f: &dyn Fn(&Value) -> bool| values.iter().filter(|v| v["tgid"] == tgid && f(v)).count() == 1;
    let caps = |v: &Value, eff: u64, perm: u64| {
        v["syscall"] == "capset"
            && v["target_pid"] == 0
            && v["new_cap_effective"] == eff
            && v["new_cap_permitted"] == perm
            && v["new_cap_inheritable"] == 0
            && v["in_container"] == false
    };
    let setns = |v: &Value, fd: i32, nstype: libc::c_long, ns: &str, result: i64, in_container: bool| {
        v["event"] == "setns"
            && v["fd"] == fd
            && v["nstype"] == nstype
            && v["namespaces"] == json!([ns])
            && v["result"] == result
            && v["in_container"] == in_container
    };
    let unshare = |v: &Value, ns: &str| v["event"] == "unshare" && v["namespaces"] == json!([ns]) && v["result"] == 0 && v["in_container"] == false;
    let cases: [(&str, bool); 7] = [
        (
            "capset_drop",
            one(actor, &|v| {
                caps(v, KEEP, KEEP)
                    && v["result"] == 0
                    && v["old_cap_effective"] == initial.0
                    && v["old_cap_permitted"] == initial.1
                    && v["caps_gained"] == json!([])
            }),
        ),
        (
            "capset_denied",
            one(actor, &|v| {
                caps(v, KEEP | 1 << CAP_SYS_BOOT, KEEP)
                    && v["result"] == -i64::from(libc::EPERM)
                    && v["old_cap_effective"] == KEEP
                    && v["old_cap_permitted"] == KEEP
                    && v["caps_gained"] == json!(["CAP_SYS_BOOT"])
            }),
        ),
        ("holder_unshare", one(holder, &|v| unshare(v, "mnt"))),
        // The holder's first unshare, still from the initial mount namespace.
        ("holder_unshare_uts", one(holder, &|v| unshare(v, "uts"))),
        ("setns_wrong_type", one(actor, &|v| setns(v, NS_FD, CLONE_NEWNET, "net", -i64::from(libc::EINVAL), false))),
        ("setns_mnt", one(actor, &|v| setns(v, NS_FD, CLONE_NEWNS, "mnt", 0, false))),
        // Made from inside the holder's mount namespace, joined just before: in_container.
        ("setns_uts", one(actor, &|v| setns(v, UTS_FD, CLONE_NEWUTS, "uts", 0, true))),
    ];
    for (what, pass) in cases {
        check(out, &format!("security.{SCENARIO}.{what}"), pass, format!("{} events of the actor and holder", values.len()));
    }
    let holder_only_unshare = values.iter().filter(|v| v["tgid"] == holder).count() == 2;
    check(out, &format!("security.{SCENARIO}.holder_quiet"), holder_only_unshare, "the holder makes two security calls: its unshares".to_owned());
}

/// A module syscall's errno by name and number, with the C library's words for it: "ENOEXEC 8
/// (Exec format error)". Named are the answers a module load can get: the header check's, a signature check's
/// (kernel/module/signing.c and the keyring's), lockdown's and a kernel without modules'.
fn errno_text(e: i32) -> String {
    let name = match e {
        libc::ENOEXEC => "ENOEXEC",
        libc::ENOSYS => "ENOSYS",
        libc::EKEYREJECTED => "EKEYREJECTED",
        libc::ENOKEY => "ENOKEY",
        libc::EKEYREVOKED => "EKEYREVOKED",
        libc::EKEYEXPIRED => "EKEYEXPIRED",
        libc::ENOPKG => "ENOPKG",
        libc::EBADMSG => "EBADMSG",
        libc::ENODATA => "ENODATA",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EINVAL => "EINVAL",
        libc::EBADF => "EBADF",
        libc::ETXTBSY => "ETXTBSY",
        libc::EEXIST => "EEXIST",
        _ => "errno",
    };
    let words = io::Error::from_raw_os_error(e).to_string();
    let words = words.split(" (os error").next().unwrap_or(&words);
    format!("{name} {e} ({words})")
}

/// The actor's `[rc, errno]` for a module syscall, with the errno named ("-1 EKEYREJECTED 129
/// (Key was rejected by service)"); a success, or anything not of that shape, as it came.
fn outcome_text(v: &Value) -> String {
    match (v[0].as_i64(), v[1].as_i64().and_then(|e| i32::try_from(e).ok())) {
        (Some(rc), Some(e)) if e != 0 => format!("{rc} {}", errno_text(e)),
        _ => v.to_string(),
    }
}

/// Both module syscalls seen, refused with ENOEXEC, from inside the holder's mount namespace.
fn module_checks(values: &[Value], actor: u64) -> bool {
    let refused = |v: &Value| {
        v["tgid"] == actor && v["event"] == "module_load" && v["result"] == -i64::from(libc::ENOEXEC) && v["in_container"] == true
    };
    let init = values.iter().filter(|v| refused(v) && v["syscall"] == "init_module" && v["len"] == IMAGE.len()).count();
    let finit = values.iter().filter(|v| refused(v) && v["syscall"] == "finit_module" && v["fd"] == MODULE_FD && v["flags"] == 0).count();
    init == 1 && finit == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_errnos_are_named() {
        assert!(errno_text(libc::ENOEXEC).starts_with("ENOEXEC 8 ("), "{}", errno_text(libc::ENOEXEC));
        let rejected = outcome_text(&json!([-1, libc::EKEYREJECTED]));
        assert!(rejected.starts_with(&format!("-1 EKEYREJECTED {} (", libc::EKEYREJECTED)), "{rejected}");
        assert!(errno_text(9999).starts_with("errno 9999 ("), "{}", errno_text(9999));
        assert_eq!(outcome_text(&json!(0)), "0");
        assert_eq!(outcome_text(&json!([0, 0])), "[0,0]");
    }

    /// The memfd finit_module is given holds the image from offset 0, whatever the file position.
    #[test]
    fn the_module_memfd_holds_the_image() {
        let fd = module_memfd().expect("memfd");
        let mut got = [0u8; 128];
        // SAFETY: got is writable for its length; fd is ours and closed once read.
        let n = unsafe {
            let n = libc::pread(fd, got.as_mut_ptr().cast(), got.len(), 0);
            libc::close(fd);
            n
        };
        assert_eq!(usize::try_from(n).ok(), Some(IMAGE.len()));
        assert_eq!(&got[..IMAGE.len()], IMAGE);
    }
}
