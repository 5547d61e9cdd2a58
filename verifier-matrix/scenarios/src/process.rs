//! process/exec_chain and security/capability: the process monitor's lineage of a leaf forked
//! from the main thread and one forked from another thread (exec, exit, fork, with the snapshot
//! shared by every kernel), processes whose threads all end at once, and a granted and a refused
//! CAP_SYS_ADMIN check seen by the security monitor's capability path.
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

/// A uid without capabilities: a change to it from uid 0 clears the effective set.
const UNPRIVILEGED_UID: libc::c_long = 4321;

/// When a capability path (tracepoint, fexit or kprobe) attached: one CAP_SYS_ADMIN check that is
/// granted (root's sethostname, in a child's own UTS namespace so the machine keeps its name) and
/// one that is refused (the same call after setuid to [`UNPRIVILEGED_UID`]), each from a forked
/// child. Where the kernel has the `capability:cap_capable` tracepoint (6.14+) the loader must
/// take it; elsewhere that check is a skip the kernel gates judge.
fn capability_workload(out: &mut Outcome, m: &mut LoadedMonitor) {
    let Some(report) = m.reports.iter().find(|r| r.program.starts_with("sec_capable_")) else {
        return; // reported as unavailable, with the kernel's reasons
    };
    let (program, path) = (report.program, report.path.clone());
    crate::discard(m);
    let name = b"tapio-cap";
    let granted = crate::fork_child(|| {
        // SAFETY: raw syscalls; name is a valid buffer of the given length.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUTS) != 0 {
                return 10;
            }
            if libc::sethostname(name.as_ptr().cast(), name.len()) != 0 {
                return 11;
            }
        }
        0
    });
    let granted = granted.map(|pid| (pid, crate::wait_exit(pid)));
    let refused = crate::fork_child(|| {
        // SAFETY: raw syscalls; name is a valid buffer of the given length.
        unsafe {
            if libc::syscall(libc::SYS_setuid, UNPRIVILEGED_UID) != 0 {
                return 20;
            }
            if libc::sethostname(name.as_ptr().cast(), name.len()) != -1 || crate::errno() != libc::EPERM {
                return 21;
            }
        }
        0
    });
    let refused = refused.map(|pid| (pid, crate::wait_exit(pid)));
    let (Ok((granted, granted_exit)), Ok((refused, refused_exit))) = (granted, refused) else {
        return check(out, "security.capability", false, "fork failed".to_owned());
    };
    let pids = [granted as u32, refused as u32];
    let admin = |e: &tapio_decode::events::Event| pids.contains(&e.tgid);
    let c = crate::collect(
        m,
        admin,
        |seen| pids.iter().all(|p| seen.iter().any(|e| e.tgid == *p)),
        crate::EVENT_WAIT,
    );
    let mut values = c.values();
    crate::relative_in_container(&mut values);
    let admin_of = |pid: i32| values.iter().find(|e| e["event"] == "capability" && e["tgid"] == pid && e["capability"] == "CAP_SYS_ADMIN");
    let (ok, no) = (admin_of(granted), admin_of(refused));
    let errors = &c.errors;

    // Granted: root's check in the initial user namespace, with its verdict where the path has one.
    let pass = granted_exit == 0
        && errors.is_empty()
        && ok.is_some_and(|e| {
            (e["verdict_known"] == false || e["result"] == 0)
                && e["syscall"] == "cap_capable"
                && e["pid"] == granted
                && e["uid"] == 0
                && e["user_ns"] == false
                && e["in_container"] == false
        });
    check(out, "security.capability", pass, format!("via {path}; child exit {granted_exit}; event: {ok:?}; errors: {errors:?}"));

    // Refused: uid 4321's check, with -EPERM where the path knows the verdict (not the kprobe's).
    let pass = refused_exit == 0
        && no.is_some_and(|e| {
            e["uid"] == UNPRIVILEGED_UID
                && e["pid"] == refused
                && if e["verdict_known"] == true { e["result"] == -i64::from(libc::EPERM) } else { program == "sec_capable_kprobe" }
        });
    check(out, "security.capability.refused", pass, format!("via {path}; child exit {refused_exit} (0: sethostname got EPERM); event: {no:?}"));

    // The tracepoint path, where the kernel has it: opts are not in the tracepoint, the verdict is.
    if program == "sec_capable_tp" {
        let shape = |e: Option<&Value>| e.is_some_and(|e| e["verdict_known"] == true && e["opts_known"] == false);
        check(out, "security.capability.tracepoint", shape(ok) && shape(no), format!("via {path}; granted {ok:?}; refused {no:?}"));
    } else {
        let why = m.fallbacks.iter().find(|(cap, ..)| *cap == "capability").map_or_else(|| format!("capability events come via {path}"), |(_, _, why)| why.clone());
        out.line(&Line::skip("security.capability.tracepoint", why, tapio_matrix_protocol::Needs::one("cap_capable tracepoint")));
    }
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

