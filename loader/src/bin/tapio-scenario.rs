//! Deterministic workloads for tests and for the verifier matrix's guests.
//!
//! `lineage` builds the process tree the process monitor must get right: a multi-threaded
//! process whose non-leader thread forks a child (so the child's `real_parent` is a thread whose
//! pid is not the process id), a second process that ptrace-attaches to that child before it
//! execs (so the child's `parent` differs from its `real_parent`), and finally another non-leader
//! thread that execs, replacing the whole process. It prints one JSON line with the ids involved,
//! then becomes `/bin/sh -c 'exit 5'`.
//!
//! `threads-exit <threads> <late_ms> <group|each>`: [`tapio_testkit::workload::threads_exit`], a
//! process whose threads all end at once.

use std::{
    ffi::CString,
    io::Write,
    process::ExitCode,
    thread,
};

fn cstrings(args: &[&str]) -> Vec<CString> {
    args.iter().map(|a| CString::new(*a).expect("no NUL in args")).collect()
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Execs `argv` (argv[0] is the path); returns only if execve failed.
fn exec(argv: &[CString]) {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(ptrs[0], ptrs.as_ptr(), envp.as_ptr()) };
}

/// Forks the traced child and its tracer from the calling (non-leader) thread.
/// Returns (child pid, child exit code, tracer pid, whether the tracer attached).
fn traced_child(nonce: &str) -> (i32, i32, i32, bool) {
    let child_argv = cstrings(&["/bin/sh", "-c", "exit 7", &format!("tapio-child-{nonce}")]);
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    let (rd, wr) = (fds[0], fds[1]);

    // After fork in a threaded process the child may only make async-signal-safe calls:
    // read, execve, ptrace, write, waitpid and _exit are.
    // SAFETY: see above; the child never returns into Rust code.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let mut b = [0u8; 1];
        // SAFETY: rd is a valid pipe end; b is one writable byte.
        unsafe { libc::read(rd, b.as_mut_ptr().cast(), 1) };
        exec(&child_argv);
        // SAFETY: _exit is always safe to call.
        unsafe { libc::_exit(127) };
    }
    // SAFETY: as above.
    let tracer = unsafe { libc::fork() };
    if tracer == 0 {
        // SAFETY: ptrace/write/waitpid on ids and fds we own; the tracer ends in _exit.
        unsafe {
            let attached = libc::ptrace(libc::PTRACE_SEIZE, child, 0, 0) == 0;
            libc::write(wr, b"x".as_ptr().cast(), 1);
            if attached {
                loop {
                    let mut status = 0;
                    if libc::waitpid(child, &mut status, libc::__WALL) < 0 {
                        break;
                    }
                    if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                        break;
                    }
                    // A ptrace stop: let the child go on, passing any signal through.
                    let sig = if libc::WIFSTOPPED(status) { libc::WSTOPSIG(status) } else { 0 };
                    let sig = if sig == libc::SIGTRAP { 0 } else { sig };
                    libc::ptrace(libc::PTRACE_CONT, child, 0, sig);
                }
            }
            libc::_exit(if attached { 0 } else { 1 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own children.
    unsafe { libc::waitpid(tracer, &mut status, 0) };
    // Without an attach the pipe write still released the child; the caller reports `traced`.
    let attached = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let mut cstatus = 0;
    // SAFETY: as above.
    unsafe { libc::waitpid(child, &mut cstatus, 0) };
    let code = if libc::WIFEXITED(cstatus) { libc::WEXITSTATUS(cstatus) } else { -1 };
    // SAFETY: closing our own pipe ends.
    unsafe {
        libc::close(rd);
        libc::close(wr);
    }
    (child, code, tracer, attached)
}

fn lineage(nonce: &str) -> ExitCode {
    let tgid = std::process::id() as i32;
    let nonce_owned = nonce.to_owned();
    let forker = thread::spawn(move || {
        let tid = gettid();
        let (child, code, tracer, traced) = traced_child(&nonce_owned);
        (tid, child, code, tracer, traced)
    });
    let (forker_tid, child, child_code, tracer, traced) = forker.join().expect("forker thread");

    let exec_argv = cstrings(&["/bin/sh", "-c", "exit 5", &format!("tapio-exec-{nonce}")]);
    let (tx, rx) = std::sync::mpsc::channel();
    let execer = thread::spawn(move || {
        let tid = gettid();
        tx.send(tid).expect("main thread waits");
        // Wait until main has printed the ids, then exec from this non-leader thread.
        wait_go();
        exec(&exec_argv);
        eprintln!("tapio-scenario: execve failed: {}", std::io::Error::last_os_error());
        std::process::exit(126);
    });
    let execer_tid = rx.recv().expect("execer thread");
    let line = serde_json::json!({
        "scenario": "lineage",
        "tgid": tgid,
        "forker_tid": forker_tid,
        "child": child,
        "child_exit_code": child_code,
        "tracer": tracer,
        "traced": traced,
        "execer_tid": execer_tid,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
    drop(out);
    go();
    let _ = execer.join();
    ExitCode::from(125)
}

static GO_LOCK: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
static GO_COND: std::sync::Condvar = std::sync::Condvar::new();

fn go() {
    *GO_LOCK.lock().expect("go lock") = true;
    GO_COND.notify_all();
}

fn wait_go() {
    let mut ready = GO_LOCK.lock().expect("go lock");
    while !*ready {
        ready = GO_COND.wait(ready).expect("go cond");
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("lineage") => {
            let nonce = args.get(2).map(String::as_str).unwrap_or("0");
            lineage(nonce)
        }
        Some("threads-exit") => {
            let threads = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(4);
            let late = std::time::Duration::from_millis(args.get(3).and_then(|n| n.parse().ok()).unwrap_or(0));
            let mode = args.get(4).and_then(|m| tapio_testkit::workload::ThreadsExit::parse(m));
            match mode {
                Some(mode) => tapio_testkit::workload::threads_exit(threads, late, mode),
                None => {
                    eprintln!("usage: tapio-scenario threads-exit <threads> <late_ms> <group|each>");
                    ExitCode::from(2)
                }
            }
        }
        _ => {
            eprintln!("usage: tapio-scenario lineage <nonce> | threads-exit <threads> <late_ms> <group|each>");
            ExitCode::from(2)
        }
    }
}
