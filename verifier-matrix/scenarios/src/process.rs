//! process/exec_chain and security/capability: the process monitor's lineage of a leaf forked
//! from the main thread and one forked from another thread (exec, exit, fork, with the snapshot
//! shared by every kernel), processes whose threads all end at once, and one CAP_SYS_ADMIN check
//! seen by the security monitor's capability path.
//!
//! The leaves are the running binary re-executed as `exit-with <code> <tag>`, the threaded
//! processes as `threads-exit` ([`crate::actor`]).

use std::process::Command;

use serde_json::{json, Value};
use tapio_decode::events::{self, DecodeOptions};
use tapio_runtime::monitors::{self, LoadedMonitor};

use crate::{check, monitor, Line, Outcome};

/// process/exec_chain, then the threads-exit processes.
pub fn run(out: &mut Outcome, loaded: &mut [LoadedMonitor]) {
    let Some(m) = monitor(out, loaded, "process", "process.exec_chain") else { return };
    process_workload(out, m);
    threads_exit_workload(out, m);
}

/// security/capability: when a capability path (fexit, tracepoint or kprobe) attached.
pub fn run_capability(out: &mut Outcome, loaded: &mut [LoadedMonitor]) {
    let Some(m) = monitor(out, loaded, "security", "security.capability") else { return };
    capability_workload(out, m);
}

/// Decodes everything waiting in a monitor's ring.
fn drain(m: &mut LoadedMonitor) -> (Vec<Value>, Vec<String>) {
    let options = DecodeOptions::default();
    let (mut events, mut errors) = (Vec::new(), Vec::new());
    while let Some(item) = m.events.next() {
        match events::decode(&item, &options) {
            Ok(e) => events.push(serde_json::to_value(&e).expect("events serialize")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (events, errors)
}

/// When a capability path (fexit, else kprobe) attached: a CAP_SYS_ADMIN check must be seen.
fn capability_workload(out: &mut Outcome, m: &mut LoadedMonitor) {
    let Some(path) = m.reports.iter().find(|r| r.program.starts_with("sec_capable_")).map(|r| r.path.clone()) else {
        return; // reported as unavailable, with the kernel's reasons
    };
    let name = b"tapio-guest";
    // SAFETY: name is a valid buffer of the given length. sethostname checks CAP_SYS_ADMIN.
    let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    let me = std::process::id();
    let (decoded, errors) = drain(m);
    let seen = decoded.iter().find(|e| {
        e["event"] == "capability" && e["tgid"] == me && e["capability"] == "CAP_SYS_ADMIN"
    });
    let pass = rc == 0
        && errors.is_empty()
        && seen.is_some_and(|e| e["verdict_known"] == false || e["result"] == 0);
    check(out, "security.capability", pass, format!("via {path}; sethostname rc {rc}; event: {seen:?}; errors: {errors:?}"));
}

/// Runs `exe exit-with <code> <tag>` from the calling thread and returns the child's pid.
fn leaf(exe: &str, code: u8, tag: &str) -> (u32, Option<i32>) {
    let mut child = Command::new(exe)
        .args(["exit-with", &code.to_string(), tag])
        .spawn()
        .expect("spawn the workload leaf");
    let pid = child.id();
    let status = child.wait().expect("wait for the leaf");
    (pid, status.code())
}

fn process_workload(out: &mut Outcome, m: &mut LoadedMonitor) {
    let me = std::process::id();
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "/init".to_owned());
    let (leaf_pid, leaf_code) = leaf(&exe, 7, "tapio-leaf");
    let exe2 = exe.clone();
    let (thread_pid, thread_code, thread_tid) = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        let (pid, code) = leaf(&exe2, 3, "tapio-thread-leaf");
        (pid, code, tid)
    })
    .join()
    .expect("workload thread");

    // Every exit happened before wait() returned, so its record is already in the ring.
    let options = DecodeOptions::default();
    let mut decoded: Vec<Value> = Vec::new();
    let mut errors = Vec::new();
    while let Some(item) = m.events.next() {
        match events::decode(&item, &options) {
            Ok(e) => decoded.push(serde_json::to_value(&e).expect("events serialize")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    check(out, "process.decode", errors.is_empty(), format!("{} events, errors: {errors:?}", decoded.len()));

    let find = |event: &str, tgid: u32| {
        decoded.iter().find(|e| e["event"] == event && e["tgid"] == tgid).cloned()
    };
    for (name, pid, code, want_code, tag) in [
        ("process.leaf", leaf_pid, leaf_code, 7, "tapio-leaf"),
        ("process.thread_leaf", thread_pid, thread_code, 3, "tapio-thread-leaf"),
    ] {
        let exec = find("exec", pid);
        let exit = find("exit", pid);
        let fork = decoded.iter().find(|e| e["event"] == "fork" && e["child_tgid"] == pid).cloned();
        let want_argv = json!([exe, "exit-with", want_code.to_string(), tag]);
        let pass = code == Some(want_code)
            && exec.as_ref().is_some_and(|e| e["ppid"] == me && e["filename"] == exe.as_str() && e["argv"] == want_argv)
            && exit.as_ref().is_some_and(|e| e["exit_code"] == want_code && e["ppid"] == me)
            && fork.as_ref().is_some_and(|e| e["ppid"] == me);
        check(
            out,
            name,
            pass,
            format!("pid {pid} (agent {me}, forking thread {thread_tid}); exec: {exec:?}; exit: {exit:?}; fork: {fork:?}"),
        );
    }
    // The scenario's own events, normalised, for the snapshot shared by every kernel.
    let ours = |e: &&Value| {
        [leaf_pid, thread_pid].iter().any(|&p| e["tgid"] == p || e["child_tgid"] == p)
    };
    let scenario: Vec<Value> = decoded.iter().filter(ours).cloned().collect();
    let roles = tapio_testkit::snapshot::Roles {
        pids: vec![
            (u64::from(me), "agent".to_owned()),
            (u64::from(thread_tid), "agent_thread".to_owned()),
            (u64::from(leaf_pid), "leaf".to_owned()),
            (u64::from(thread_pid), "thread_leaf".to_owned()),
        ],
        exe: exe.clone(),
        cgroups: crate::own_cgroups(),
        ..Default::default()
    };
    match tapio_testkit::snapshot::normalize(&scenario, &roles) {
        Ok(events) => out.line(&Line::Snapshot {
            monitor: "process".to_owned(),
            scenario: "exec_chain".to_owned(),
            body: tapio_testkit::snapshot::render(&events),
        }),
        Err(e) => check(out, "process.snapshot_normalize", false, e.to_string()),
    }
    let lost = monitors::stat(&m.ebpf, 1).unwrap_or(0);
    check(out, "process.no_loss", lost == 0, format!("{lost} records lost"));
    out.line(&Line::Events { monitor: "process".to_owned(), count: decoded.len() as u64 });
}

/// Processes whose threads all end at once (tapio_testkit::workload::threads_exit), both ways: each
/// must be reported once, with wait()'s exit code and a duration from the process's start.
/// Kernels before 7.x find the last thread out by `signal->live` and claim the process in a map;
/// newer ones say `group_dead` in the tracepoint.
fn threads_exit_workload(out: &mut Outcome, m: &mut LoadedMonitor) {
    use tapio_testkit::workload::ThreadsExit;
    const LATE_MS: u64 = 100;
    let _ = drain(m);
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "/init".to_owned());
    let mut runs = Vec::new();
    for mode in [ThreadsExit::Group, ThreadsExit::Each] {
        let children: Vec<_> = (0..6)
            .filter_map(|_| Command::new(&exe).args(["threads-exit", "4", &LATE_MS.to_string(), mode.name()]).spawn().ok())
            .collect();
        for mut child in children {
            let pid = child.id();
            let code = child.wait().ok().and_then(|s| s.code());
            runs.push((mode, pid, code));
        }
    }
    let (decoded, errors) = drain(m);
    let mut problems = errors;
    if runs.len() != 12 {
        problems.push(format!("{} of 12 workload processes started", runs.len()));
    }
    for (mode, pid, code) in runs {
        let what = format!("{} pid {pid}", mode.name());
        let Some(code) = code.filter(|c| mode.wait_codes().contains(c)) else {
            problems.push(format!("{what}: wait() status {code:?}"));
            continue;
        };
        let exits: Vec<&Value> = decoded.iter().filter(|e| e["event"] == "exit" && e["tgid"] == pid).collect();
        if exits.len() != 1 {
            problems.push(format!("{what}: {} exit events", exits.len()));
        }
        for e in exits {
            if e["exit_code"] != i64::from(code) {
                problems.push(format!("{what}: exit_code {} (wait() said {code})", e["exit_code"]));
            }
            if e["duration_ns"].as_u64().unwrap_or(0) < LATE_MS * 1_000_000 {
                problems.push(format!("{what}: duration_ns {} under the process's {LATE_MS} ms", e["duration_ns"]));
            }
        }
    }
    check(out, "process.threads_exit", problems.is_empty(), format!("12 processes of 5 threads; problems: {problems:?}"));
}

