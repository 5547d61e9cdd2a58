//! process/lineage: the process tree the process monitor must get right, built by an actor (the
//! agent re-executed as `lineage <nonce>`): a non-leader thread forks a child, so the child's
//! `real_parent` is a thread whose pid is not the process id; a second child, the tracer,
//! PTRACE_SEIZEs that child before it execs, so the child's `parent` (the tracer) differs from its
//! `real_parent`; and finally another non-leader thread execs, replacing the whole process, which
//! keeps its tgid and takes the leader's pid. Both execs re-execute the agent as `exit-with`
//! ([`crate::actor`]), with 7 for the child and 5 for the process.
//!
//! The actor prints one JSON line with the ids involved before the last exec. The monitor must
//! name the process (not the forking thread, not the tracer) as the child's parent, in its fork
//! and its exec, report the exec from the non-leader thread under the process's own tgid and
//! pid, and both exits with their codes.

use std::{
    ffi::CString,
    io::Write,
    process::{Command, ExitCode, Stdio},
    sync::{mpsc, Condvar, Mutex},
    thread,
};

use serde_json::{json, Value};
use tapio_runtime::monitors::LoadedMonitor;

use super::{check, collect, current_exe, discard, gettid, monitor, EVENT_WAIT};
use crate::Outcome;

const SCENARIO: &str = "process.lineage";
/// The exit codes of the child's and the process's `exit-with`.
const CHILD_CODE: i32 = 7;
const EXEC_CODE: i32 = 5;
/// What the actor exits with when its last execve failed.
const EXEC_FAILED: u8 = 125;

fn cstrings(args: &[&str]) -> Vec<CString> {
    args.iter().map(|a| CString::new(*a).expect("no NUL in args")).collect()
}

/// Execs `argv` (argv[0] is the path); returns only if execve failed. Async-signal-safe once the
/// strings are built.
fn exec(argv: &[CString]) {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(ptrs[0], ptrs.as_ptr(), envp.as_ptr()) };
}

/// Forks the traced child and its tracer from the calling (non-leader) thread.
/// Returns (child pid, child exit code, tracer pid, whether the tracer attached).
fn traced_child(exe: &str, nonce: &str) -> (i32, i32, i32, bool) {
    let child_argv = cstrings(&[exe, "exit-with", &CHILD_CODE.to_string(), &format!("tapio-child-{nonce}")]);
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return (-1, -1, -1, false);
    }
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

/// The go-ahead for the exec'ing thread, given once the ids are printed.
static GO: Mutex<bool> = Mutex::new(false);
static GO_COND: Condvar = Condvar::new();

/// The actor: `lineage <nonce>`. Prints the ids, then its last exec replaces it (exit 5); exits
/// [`EXEC_FAILED`] if that exec failed.
pub fn actor(nonce: &str) -> ExitCode {
    let exe = current_exe();
    let tgid = std::process::id();
    let (exe_fork, nonce_fork) = (exe.clone(), nonce.to_owned());
    let forker = thread::spawn(move || {
        let tid = gettid();
        let (child, code, tracer, traced) = traced_child(&exe_fork, &nonce_fork);
        (tid, child, code, tracer, traced)
    });
    let Ok((forker_tid, child, child_code, tracer, traced)) = forker.join() else { return ExitCode::from(EXEC_FAILED) };

    let exec_argv = cstrings(&[&exe, "exit-with", &EXEC_CODE.to_string(), &format!("tapio-exec-{nonce}")]);
    let (tx, rx) = mpsc::channel();
    let execer = thread::spawn(move || {
        let _ = tx.send(gettid());
        let mut go = GO.lock().expect("go lock");
        while !*go {
            go = GO_COND.wait(go).expect("go cond");
        }
        drop(go);
        exec(&exec_argv);
    });
    let execer_tid = rx.recv().unwrap_or(0);
    let line = json!({
        "tgid": tgid, "forker_tid": forker_tid, "child": child, "child_exit_code": child_code,
        "tracer": tracer, "traced": traced, "execer_tid": execer_tid,
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    drop(out);
    *GO.lock().expect("go lock") = true;
    GO_COND.notify_all();
    let _ = execer.join();
    ExitCode::from(EXEC_FAILED)
}

pub fn run(out: &mut Outcome, loaded: &mut [LoadedMonitor]) {
    let Some(m) = monitor(out, loaded, "process", SCENARIO) else { return };
    discard(m);
    let me = std::process::id();
    let nonce = me.to_string();
    let exe = current_exe();
    let output = Command::new(&exe).args(["lineage", &nonce]).stdin(Stdio::null()).stderr(Stdio::inherit()).output();
    let (ids, code) = match &output {
        Ok(o) => (serde_json::from_slice::<Value>(&o.stdout).unwrap_or(Value::Null), o.status.code()),
        Err(e) => return check(out, &format!("{SCENARIO}.actor"), false, format!("spawn {exe} lineage: {e}")),
    };
    let (tgid, child) = (ids["tgid"].as_u64().unwrap_or(0), ids["child"].as_u64().unwrap_or(0));
    let actor_ok = code == Some(EXEC_CODE)
        && ids["traced"] == true
        && ids["child_exit_code"] == CHILD_CODE
        && tgid != 0
        && child != 0
        && ids["forker_tid"] != ids["tgid"]
        && ids["execer_tid"] != ids["tgid"];
    check(
        out,
        &format!("{SCENARIO}.actor"),
        actor_ok,
        format!("exit {code:?} (want {EXEC_CODE}: the exec from a thread ran); ids {ids} (the tracer attached, the child exited {CHILD_CODE}, both threads are not the leader)"),
    );
    if !actor_ok {
        return;
    }

    // Every exit happened before output() returned: all records are in the ring.
    let ours = |e: &tapio_decode::events::Event| u64::from(e.tgid) == tgid || u64::from(e.tgid) == child;
    let c = collect(m, ours, |_| true, EVENT_WAIT);
    let values = c.values();
    check(out, &format!("{SCENARIO}.decode"), c.errors.is_empty(), format!("{} events, errors: {:?}", values.len(), c.errors));
    let tag = |e: &Value, t: &str| e["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == t));
    let find = |what: &dyn Fn(&Value) -> bool| values.iter().find(|e| what(e));
    let child_tag = format!("tapio-child-{nonce}");
    let exec_tag = format!("tapio-exec-{nonce}");
    let child_exec = find(&|e| e["event"] == "exec" && tag(e, &child_tag));
    let thread_exec = find(&|e| e["event"] == "exec" && tag(e, &exec_tag));
    let child_exit = find(&|e| e["event"] == "exit" && e["tgid"] == child);
    let exit = find(&|e| e["event"] == "exit" && e["tgid"] == tgid);
    let fork = find(&|e| e["event"] == "fork" && e["child_tgid"] == child);
    let argv = |code: i32, tag: &str| json!([exe, "exit-with", code.to_string(), tag]);

    // real_parent is the forking thread; its tgid is the process. real_parent->pid would give
    // forker_tid, and parent (the ptrace parent) would give the tracer.
    let pass = child_exec.is_some_and(|e| e["ppid"] == tgid && e["pid"] == child && e["tgid"] == child && e["argv"] == argv(CHILD_CODE, &child_tag))
        && fork.is_some_and(|e| e["ppid"] == tgid);
    check(
        out,
        &format!("{SCENARIO}.child_parent"),
        pass,
        format!("want ppid {tgid} (not thread {} or tracer {}); exec {child_exec:?}; fork {fork:?}", ids["forker_tid"], ids["tracer"]),
    );
    // After exec from a non-leader thread the process keeps its tgid and the leader's pid.
    let pass = thread_exec.is_some_and(|e| e["tgid"] == tgid && e["pid"] == tgid && e["ppid"] == me && e["argv"] == argv(EXEC_CODE, &exec_tag));
    check(out, &format!("{SCENARIO}.exec_from_thread"), pass, format!("want tgid and pid {tgid}, ppid {me} (thread {} exec'd): {thread_exec:?}", ids["execer_tid"]));
    let pass = child_exit.is_some_and(|e| e["exit_code"] == CHILD_CODE)
        && exit.is_some_and(|e| e["exit_code"] == EXEC_CODE && e["duration_ns"].as_u64().is_some_and(|d| d > 0));
    check(out, &format!("{SCENARIO}.exits"), pass, format!("child {child_exit:?}; process {exit:?}"));
}
