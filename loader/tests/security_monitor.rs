//! The security monitor on the running kernel: real credential, injection, namespace, mount and
//! module syscalls from forked children, each seen with its fields and `in_container`. The new
//! mount API (fsmount, open_tree, move_mount) is the shared scenario security.mount_api
//! (tapio-scenarios, run on this kernel by verifier-matrix/guest/tests/scenarios.rs and in every
//! VM of the matrix).
//!
//! The children are forked (not spawned) so each syscall comes from a known pid, and so the test
//! process itself keeps root and its namespaces. After fork a child only makes raw syscalls
//! (async-signal-safe) and leaves with `_exit`; its exit code names the step that failed.

mod common;

use std::{ffi::CString, path::Path, time::Duration};

use common::{kernel_lock, skip_unless_root, Loader};
use serde_json::Value;

/// Written into the ptrace target by PTRACE_POKEDATA and process_vm_writev: the forked target
/// has it at the same address as this process.
static mut POKE_TARGET: u64 = 0;

const CAP_SYS_BOOT: u32 = 22;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const PTRACE_SEIZE: libc::c_uint = 0x4206;
const PTRACE_INTERRUPT: libc::c_uint = 0x4207;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Forks; the child runs `f` and `_exit`s with its result. Returns the child's pid.
fn fork_child(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child only runs `f`, which makes raw syscalls, then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = f();
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for `pid` and returns its exit code.
fn wait_exit(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    assert_eq!(r, pid, "waitpid {pid}: {}", std::io::Error::last_os_error());
    assert!(libc::WIFEXITED(status), "child {pid} did not exit normally: status {status:#x}");
    libc::WEXITSTATUS(status)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn find<'a>(events: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    events
        .iter()
        .find(|e| e["monitor"] == "security" && pred(e))
        .unwrap_or_else(|| panic!("no {what} among {} events: {events:#?}", events.len()))
}

fn tracepoint_exists(name: &str) -> bool {
    ["/sys/kernel/tracing/events/syscalls", "/sys/kernel/debug/tracing/events/syscalls"]
        .iter()
        .any(|d| Path::new(d).join(name).is_dir())
}

#[test]
fn security_events_from_real_syscalls() {
    if skip_unless_root("security_events_from_real_syscalls") {
        return;
    }
    let _serial = kernel_lock();
    let loader = Loader::start(&["--monitors", "security"]);
    let nonce = std::process::id();

    // 1. Credentials: capset dropping CAP_SYS_BOOT from the effective set, setresgid, setuid
    //    (root to 4321 works), then setuid(0), which 4321 may not do.
    let creds = fork_child(|| {
        let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
        let mut data = [CapData::default(); 2];
        // SAFETY: header and data are the capget ABI's structs, data has the v3 two slots.
        if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
            return 10;
        }
        data[0].effective &= !(1 << CAP_SYS_BOOT);
        // SAFETY: as above.
        if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
            return 11;
        }
        // SAFETY: plain syscalls in the forked child.
        unsafe {
            if libc::setresgid(4321, 4321, 4321) != 0 {
                return 12;
            }
            if libc::syscall(libc::SYS_setuid, 4321) != 0 {
                return 13;
            }
            if libc::syscall(libc::SYS_setuid, 0) != -1 || errno() != libc::EPERM {
                return 14;
            }
        }
        0
    });
    assert_eq!(wait_exit(creds), 0, "credential child failed at the step its code names");

    // 2. Injection: PTRACE_SEIZE a target, stop it, POKEDATA into it, process_vm_writev into it.
    let target = fork_child(|| loop {
        // SAFETY: waits for a signal; the parent kills this child.
        unsafe { libc::pause() };
    });
    let addr = std::ptr::addr_of_mut!(POKE_TARGET);
    // SAFETY: ptrace on our own child; addr is a valid address in its (forked) memory.
    unsafe {
        assert_eq!(libc::ptrace(PTRACE_SEIZE, target, 0, 0), 0, "seize: {}", std::io::Error::last_os_error());
        assert_eq!(libc::ptrace(PTRACE_INTERRUPT, target, 0, 0), 0, "interrupt");
        let mut status = 0;
        assert_eq!(libc::waitpid(target, &mut status, libc::__WALL), target);
        assert_eq!(libc::ptrace(libc::PTRACE_POKEDATA, target, addr, 0x7a70_696fu64), 0, "pokedata");
    }
    let value: u64 = 0x5eed;
    let local = libc::iovec { iov_base: std::ptr::addr_of!(value) as *mut _, iov_len: 8 };
    let remote = libc::iovec { iov_base: addr.cast(), iov_len: 8 };
    // SAFETY: one 8-byte iovec each side, both valid.
    let written = unsafe { libc::process_vm_writev(target, &local, 1, &remote, 1, 0) };
    assert_eq!(written, 8, "process_vm_writev: {}", std::io::Error::last_os_error());
    // SAFETY: our own child.
    unsafe { libc::kill(target, libc::SIGKILL) };
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(target, &mut status, libc::__WALL) };

    // 3. Namespaces: a child unshares its UTS namespace; another joins it with setns.
    let (mut ready, mut go) = ([0i32; 2], [0i32; 2]);
    // SAFETY: pipes for the handshake.
    unsafe { assert_eq!(libc::pipe(ready.as_mut_ptr()) | libc::pipe(go.as_mut_ptr()), 0) };
    let holder = fork_child(|| {
        let mut b = 0u8;
        // SAFETY: raw syscalls on the handshake pipes.
        unsafe {
            let ok = libc::unshare(libc::CLONE_NEWUTS) == 0;
            libc::write(ready[1], [u8::from(ok)].as_ptr().cast(), 1);
            libc::read(go[0], std::ptr::addr_of_mut!(b).cast(), 1);
            if ok { 0 } else { 20 }
        }
    });
    let mut ok = 0u8;
    // SAFETY: reading the handshake.
    unsafe { libc::read(ready[0], std::ptr::addr_of_mut!(ok).cast(), 1) };
    assert_eq!(ok, 1, "unshare(CLONE_NEWUTS) failed in the holder");
    let ns_path = CString::new(format!("/proc/{holder}/ns/uts")).unwrap();
    let joiner = fork_child(|| {
        // SAFETY: raw syscalls in the forked child.
        unsafe {
            let fd = libc::open(ns_path.as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                return 30;
            }
            if libc::setns(fd, libc::CLONE_NEWUTS) != 0 {
                return 31;
            }
        }
        0
    });
    assert_eq!(wait_exit(joiner), 0, "setns child failed");
    // SAFETY: releasing the holder.
    unsafe { libc::write(go[1], [1u8].as_ptr().cast(), 1) };
    assert_eq!(wait_exit(holder), 0);

    // 4. A tmpfs mount inside a new mount namespace (made private first, so nothing leaks out).
    let dir = std::env::temp_dir().join(format!("tapio-sec-{nonce}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (root, dir_c) = (CString::new("/").unwrap(), CString::new(dir.to_str().unwrap()).unwrap());
    let (source, fstype) = (CString::new(format!("tapio-sec-{nonce}")).unwrap(), CString::new("tmpfs").unwrap());
    let mounter = fork_child(|| {
        // SAFETY: raw syscalls in the forked child; every pointer is a C string made before fork.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return 40;
            }
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), private, std::ptr::null()) != 0 {
                return 41;
            }
            if libc::mount(source.as_ptr(), dir_c.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) != 0 {
                return 42;
            }
        }
        0
    });
    assert_eq!(wait_exit(mounter), 0, "mount child failed");
    let _ = std::fs::remove_dir(&dir);

    // 5. Module loads with a garbage image: refused, still reported where the kernel has modules.
    let modules = tracepoint_exists("sys_enter_init_module");
    let garbage = [0x7fu8, b'E', b'L', b'F', 0, 0, 0, 0];
    let params = CString::new("").unwrap();
    let loader_child = fork_child(|| {
        // SAFETY: raw syscalls; the kernel refuses the image.
        unsafe {
            libc::syscall(libc::SYS_init_module, garbage.as_ptr(), garbage.len(), params.as_ptr());
            libc::syscall(libc::SYS_finit_module, -1, params.as_ptr(), 0);
        }
        0
    });
    assert_eq!(wait_exit(loader_child), 0);

    let mut seen = Vec::new();
    let last = loader.wait_for(&mut seen, Duration::from_secs(5), |e| {
        e["event"] == "mount" && e["tgid"] == mounter && e["source"] == format!("tapio-sec-{nonce}")
    });
    assert!(last.is_some(), "the mount event never arrived");
    let (rest, stderr, status) = loader.finish();
    assert!(status.success(), "tapio-load exits 0 on SIGTERM: {status}; stderr:\n{stderr}");
    seen.extend(rest);
    common::relative_in_container(&mut seen);
    let ev = &seen;

    // Credentials.
    let capset = find(ev, "capset", |e| e["tgid"] == creds && e["syscall"] == "capset");
    assert_eq!(capset["event"], "cred_change");
    assert_eq!(capset["result"], 0);
    assert_eq!(capset["in_container"], false, "{capset}");
    let old = capset["old_cap_effective"].as_u64().unwrap();
    assert_ne!(old & (1 << CAP_SYS_BOOT), 0, "root starts with CAP_SYS_BOOT: {capset}");
    assert_eq!(capset["new_cap_effective"].as_u64().unwrap(), old & !(1 << CAP_SYS_BOOT), "{capset}");
    assert_eq!(capset["caps_gained"], serde_json::json!([]));
    let setresgid = find(ev, "setresgid", |e| e["tgid"] == creds && e["syscall"] == "setresgid");
    assert_eq!(setresgid["event"], "cred_change");
    for (k, v) in [("old_gid", 0), ("new_gid", 4321), ("new_egid", 4321), ("new_sgid", 4321), ("result", 0)] {
        assert_eq!(setresgid[k], v, "{k}: {setresgid}");
    }
    assert!(setresgid.get("new_uid").is_none(), "{setresgid}");
    let setuids: Vec<&Value> = ev.iter().filter(|e| e["tgid"] == creds && e["syscall"] == "setuid").collect();
    assert_eq!(setuids.len(), 2, "{setuids:#?}");
    assert_eq!((setuids[0]["old_uid"].clone(), setuids[0]["new_uid"].clone(), setuids[0]["result"].clone()), (0.into(), 4321.into(), 0.into()));
    assert_eq!(setuids[0]["old_gid"], 4321, "setresgid ran first: {}", setuids[0]);
    assert_eq!(setuids[1]["old_uid"], 4321, "{}", setuids[1]);
    assert_eq!(setuids[1]["new_uid"], 0, "{}", setuids[1]);
    assert_eq!(setuids[1]["result"], -libc::EPERM as i64, "a refused setuid carries -EPERM: {}", setuids[1]);

    // Injection.
    let me = std::process::id();
    let seize = find(ev, "ptrace seize", |e| e["event"] == "ptrace" && e["request"] == "PTRACE_SEIZE" && e["target_pid"] == target);
    assert_eq!((seize["tgid"].as_u64(), seize["result"].as_i64()), (Some(me as u64), Some(0)), "{seize}");
    let poke = find(ev, "ptrace pokedata", |e| e["event"] == "ptrace" && e["request"] == "PTRACE_POKEDATA" && e["target_pid"] == target);
    assert_eq!(poke["addr"], addr as u64, "{poke}");
    assert_eq!(poke["result"], 0);
    assert!(
        !ev.iter().any(|e| e["event"] == "ptrace" && e["target_pid"] == target && e["request"] != "PTRACE_SEIZE" && e["request"] != "PTRACE_POKEDATA"),
        "PTRACE_INTERRUPT is not an injection request and is not reported"
    );
    let vmw = find(ev, "process_vm_writev", |e| e["event"] == "process_vm_writev" && e["target_pid"] == target);
    assert_eq!(vmw["result"], 8, "{vmw}");
    assert_eq!(vmw["in_container"], false);

    // Namespaces.
    let unshare_uts = find(ev, "unshare uts", |e| e["event"] == "unshare" && e["tgid"] == holder);
    assert_eq!(unshare_uts["namespaces"], serde_json::json!(["uts"]), "{unshare_uts}");
    assert_eq!(unshare_uts["in_container"], false, "unshare(CLONE_NEWUTS) from the initial namespaces");
    let setns = find(ev, "setns", |e| e["event"] == "setns" && e["tgid"] == joiner);
    assert_eq!(setns["namespaces"], serde_json::json!(["uts"]), "{setns}");
    assert_eq!(setns["result"], 0);
    assert_eq!(setns["in_container"], false, "{setns}");

    // Mounts: unshare is called from the initial mount namespace; the mounts happen in the new one.
    let unshare_mnt = find(ev, "unshare mnt", |e| e["event"] == "unshare" && e["tgid"] == mounter);
    assert_eq!(unshare_mnt["namespaces"], serde_json::json!(["mnt"]));
    assert_eq!(unshare_mnt["in_container"], false, "{unshare_mnt}");
    let mount = find(ev, "tmpfs mount", |e| e["event"] == "mount" && e["tgid"] == mounter && e["fstype"] == "tmpfs");
    assert_eq!(mount["source"], format!("tapio-sec-{nonce}"));
    assert_eq!(mount["target"], dir.to_str().unwrap());
    assert_eq!(mount["result"], 0);
    assert_eq!(mount["in_container"], true, "a mount in a new mount namespace: {mount}");
    assert_ne!(mount["mnt_ns"], unshare_mnt["mnt_ns"], "{mount} {unshare_mnt}");
    let private = find(ev, "private remount", |e| e["event"] == "mount" && e["tgid"] == mounter && e["target"] == "/");
    assert_eq!(private["in_container"], true);

    // Modules.
    if modules {
        let init = find(ev, "init_module", |e| e["event"] == "module_load" && e["syscall"] == "init_module");
        assert_eq!(init["len"], garbage.len());
        assert!(init["result"].as_i64().unwrap() < 0, "a garbage image is refused: {init}");
        let finit = find(ev, "finit_module", |e| e["event"] == "module_load" && e["syscall"] == "finit_module");
        assert_eq!(finit["fd"], -1);
        assert_eq!(finit["result"], -libc::EBADF as i64);
    } else {
        common::skip_for_kernel("module_load events", &common::needs_of("security", "init_module"), "no init_module tracepoint");
        assert!(
            stderr.contains("init_module: unavailable") && stderr.contains("CONFIG_MODULES"),
            "the loader says why module loads are not watched; stderr:\n{stderr}"
        );
    }

    let left = common::programs_left_after("sec_", Duration::from_secs(2));
    assert!(left.is_empty(), "programs left loaded after exit: {left:?}");
}

/// Whether tracefs lists `capability/cap_capable` (mounted by the loader or the system).
fn cap_capable_tracepoint_exists() -> bool {
    ["/sys/kernel/tracing/events/capability/cap_capable", "/sys/kernel/debug/tracing/events/capability/cap_capable"]
        .iter()
        .any(|d| Path::new(d).is_dir())
}

/// Capability checks through the `capability:cap_capable` tracepoint: a granted CAP_SYS_ADMIN
/// (root's sethostname) and a refused one (the same call after setuid to a user without it),
/// each with its verdict, the caller and the record's other fields as the fexit path fills them.
#[test]
fn capability_events_from_the_cap_capable_tracepoint() {
    if skip_unless_root("capability_events_from_the_cap_capable_tracepoint") {
        return;
    }
    let _serial = kernel_lock();
    // Started first: the loader mounts tracefs when it is not mounted.
    let loader = Loader::start(&["--monitors", "security"]);
    if !cap_capable_tracepoint_exists() {
        // Fails instead on 6.14 and later, where the tracepoint exists, unless the kernel explains it.
        common::skip_for_kernel(
            "capability_events_from_the_cap_capable_tracepoint",
            &tapio_kernel_gates::Needs::one("cap_capable tracepoint"),
            "tracefs does not list capability/cap_capable",
        );
        return;
    }
    // Each child checks CAP_SYS_ADMIN once: as root (granted), then as uid 4321 (refused; a uid
    // change from 0 clears the effective set).
    let name = b"tapio-cap";
    let granted = fork_child(|| {
        // SAFETY: name is a valid buffer of the given length; sethostname checks CAP_SYS_ADMIN.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUTS) != 0 {
                return 50;
            }
            if libc::sethostname(name.as_ptr().cast(), name.len()) != 0 {
                return 51;
            }
        }
        0
    });
    assert_eq!(wait_exit(granted), 0, "granted child failed at the step its code names");
    let refused = fork_child(|| {
        // SAFETY: raw syscalls in the forked child.
        unsafe {
            if libc::syscall(libc::SYS_setuid, 4321) != 0 {
                return 60;
            }
            if libc::sethostname(name.as_ptr().cast(), name.len()) != -1 || errno() != libc::EPERM {
                return 61;
            }
        }
        0
    });
    assert_eq!(wait_exit(refused), 0, "refused child failed at the step its code names");

    let is_admin_check = |e: &Value, pid: libc::pid_t| {
        e["event"] == "capability" && e["tgid"] == pid && e["capability"] == "CAP_SYS_ADMIN"
    };
    let mut seen = Vec::new();
    let last = loader.wait_for(&mut seen, Duration::from_secs(5), |e| is_admin_check(e, refused));
    let (rest, stderr, status) = loader.finish();
    assert!(status.success(), "tapio-load exits 0 on SIGTERM: {status}; stderr:\n{stderr}");
    seen.extend(rest);
    common::relative_in_container(&mut seen);
    assert!(last.is_some(), "no CAP_SYS_ADMIN check from the refused child; stderr:\n{stderr}");
    assert!(
        stderr.contains("sec_capable_tp") && stderr.contains("raw_tracepoint:cap_capable"),
        "the tracepoint path is the one taken; stderr:\n{stderr}"
    );
    assert!(!stderr.contains("capability: unavailable"), "stderr:\n{stderr}");

    let ok = find(&seen, "granted CAP_SYS_ADMIN", |e| is_admin_check(e, granted) && e["result"] == 0);
    assert_eq!(ok["syscall"], "cap_capable", "{ok}");
    assert_eq!(ok["verdict_known"], true, "{ok}");
    assert_eq!(ok["opts_known"], false, "the tracepoint does not carry opts: {ok}");
    assert_eq!(ok["pid"], granted, "{ok}");
    assert_eq!(ok["uid"], 0, "{ok}");
    assert_eq!(ok["user_ns"], false, "checked against the initial user namespace: {ok}");
    assert_eq!(ok["in_container"], false, "unshare(CLONE_NEWUTS) leaves mnt and pid namespaces: {ok}");
    assert!(ok["mnt_ns"].as_u64().unwrap() > 0, "{ok}");
    let no = find(&seen, "refused CAP_SYS_ADMIN", |e| is_admin_check(e, refused) && e["result"] == -libc::EPERM as i64);
    assert_eq!(no["uid"], 4321, "{no}");
    assert_eq!(no["verdict_known"], true, "{no}");

    let left = common::programs_left_after("sec_", Duration::from_secs(2));
    assert!(left.is_empty(), "programs left loaded after exit: {left:?}");
}
