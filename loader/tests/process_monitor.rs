//! The process monitor on the running kernel: lineage through threads, argv, exit codes,
//! prompt delivery, and a clean detach.

mod common;

use std::{process::Command, time::Duration};

use common::{kernel_lock, loaded_program_names, skip_unless_root, Loader};
use serde_json::Value;

fn argv_has(e: &Value, marker: &str) -> bool {
    e["event"] == "exec" && e["argv"].as_array().is_some_and(|a| a.iter().any(|x| x.as_str() == Some(marker)))
}

fn find<'a>(events: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    events.iter().find(|e| pred(e)).unwrap_or_else(|| panic!("no {what} among {} events", events.len()))
}

fn exit_of(events: &[Value], tgid: u64) -> &Value {
    find(events, &format!("exit of {tgid}"), |e| e["event"] == "exit" && e["tgid"] == tgid)
}

/// shell -> shell -> threaded process; a non-leader thread forks a traced child; another execs.
#[test]
fn lineage_through_threads_and_exec() {
    if skip_unless_root("lineage_through_threads_and_exec") {
        return;
    }
    let _serial = kernel_lock();
    let loader = Loader::start(&["--monitors", "process"]);
    let nonce = format!("{}", std::process::id());
    let scenario = env!("CARGO_BIN_EXE_tapio-scenario");
    let inner = format!("{scenario} lineage {nonce}; exit $?");
    let outer = format!("/bin/sh -c '{inner}' tapio-b-{nonce}; exit $?");
    let out = Command::new("/bin/sh")
        .args(["-c", &outer, &format!("tapio-a-{nonce}")])
        .output()
        .expect("run the shell chain");
    assert_eq!(out.status.code(), Some(5), "the chain ends with the exec'd `exit 5`; stderr: {}", String::from_utf8_lossy(&out.stderr));
    let ids: Value = serde_json::from_slice(&out.stdout).expect("scenario prints its ids");
    assert_eq!(ids["traced"], true, "the tracer must attach, or `parent` would equal `real_parent`: {ids}");
    assert_eq!(ids["child_exit_code"], 7);
    let tgid = ids["tgid"].as_u64().unwrap();
    assert_ne!(ids["forker_tid"], ids["tgid"], "the child must come from a non-leader thread");

    let (events, stderr, status) = loader.finish();
    assert!(status.success(), "tapio-load exits 0 on SIGTERM: {status}; stderr:\n{stderr}");

    let test_tgid = std::process::id() as u64;
    let a = find(&events, "exec of shell a", |e| argv_has(e, &format!("tapio-a-{nonce}")));
    let b = find(&events, "exec of shell b", |e| argv_has(e, &format!("tapio-b-{nonce}")));
    let s = find(&events, "exec of the scenario", |e| argv_has(e, "lineage") && e["tgid"] == tgid);
    let c = find(&events, "exec of the traced child", |e| argv_has(e, &format!("tapio-child-{nonce}")));
    let x = find(&events, "exec from a non-leader thread", |e| argv_has(e, &format!("tapio-exec-{nonce}")));

    assert_eq!(a["ppid"], test_tgid, "shell a's parent is this test: {a}");
    assert_eq!(b["ppid"], a["tgid"], "shell b's parent is shell a: {b}");
    assert_eq!(s["ppid"], b["tgid"], "the scenario's parent is shell b: {s}");
    // real_parent is the forking thread; its tgid is the process. real_parent->pid would give
    // forker_tid, and parent (the ptrace parent) would give the tracer.
    assert_eq!(c["ppid"], tgid, "the child's parent is the threaded process, not thread {} or tracer {}: {c}", ids["forker_tid"], ids["tracer"]);
    assert_eq!(c["pid"], ids["child"]);
    // After exec from a non-leader thread the process keeps its tgid and the leader's pid.
    assert_eq!(x["tgid"], tgid, "{x}");
    assert_eq!(x["pid"], tgid, "the exec'ing thread takes the leader's pid: {x}");
    assert_eq!(x["ppid"], b["tgid"], "{x}");

    for (e, path, argv) in [
        (c, "/bin/sh", vec!["/bin/sh", "-c", "exit 7"]),
        (x, "/bin/sh", vec!["/bin/sh", "-c", "exit 5"]),
    ] {
        assert_eq!(e["filename"], path, "{e}");
        let got: Vec<&str> = e["argv"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(&got[..argv.len()], &argv[..], "{e}");
        assert_eq!(e["argv_truncated"], false);
    }
    assert_eq!(exit_of(&events, c["tgid"].as_u64().unwrap())["exit_code"], 7);
    assert_eq!(exit_of(&events, tgid)["exit_code"], 5);
    assert_eq!(exit_of(&events, b["tgid"].as_u64().unwrap())["exit_code"], 5);
    assert_eq!(exit_of(&events, a["tgid"].as_u64().unwrap())["exit_code"], 5);
    let fork = find(&events, "fork of the child", |e| e["event"] == "fork" && e["child_tgid"] == c["tgid"]);
    assert_eq!(fork["ppid"], tgid, "{fork}");
    assert!(exit_of(&events, tgid)["duration_ns"].as_u64().unwrap() > 0);

    let left = common::programs_left_after("process_", Duration::from_secs(2));
    assert!(left.is_empty(), "programs left loaded after exit: {left:?}");
}

/// `/bin/true` from another process shows up promptly, with the right parent.
#[test]
fn exec_is_delivered_within_100ms() {
    if skip_unless_root("exec_is_delivered_within_100ms") {
        return;
    }
    let _serial = kernel_lock();
    let loader = Loader::start(&["--monitors", "process"]);
    let mut seen = Vec::new();
    let mut child = Command::new("/bin/true").spawn().expect("spawn /bin/true");
    let pid = child.id() as u64;
    let got = loader
        .wait_for(&mut seen, Duration::from_secs(5), |e| e["event"] == "exec" && e["tgid"] == pid)
        .expect("exec of /bin/true never arrived");
    child.wait().expect("wait for /bin/true");
    let latency_ns = got.read_ns.saturating_sub(got.event["ts_ns"].as_u64().unwrap());
    assert_eq!(got.event["ppid"], std::process::id() as u64, "{}", got.event);
    assert_eq!(got.event["filename"], "/bin/true");
    assert!(latency_ns < 100_000_000, "exec reached user space after {} ms", latency_ns / 1_000_000);
    let (_, stderr, status) = loader.finish();
    assert!(status.success(), "{stderr}");
}

/// SIGINT, like SIGTERM, detaches and exits 0 within a second, leaving nothing loaded.
#[test]
fn sigint_detaches_promptly() {
    if skip_unless_root("sigint_detaches_promptly") {
        return;
    }
    let _serial = kernel_lock();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tapio-load"))
        .args(["run", "--monitors", "process"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    assert!(lines.any(|l| l.is_ok_and(|l| l.contains("streaming events"))), "never attached");
    assert!(loaded_program_names().iter().any(|n| n == "process_exec"), "process_exec not loaded while running");
    let started = std::time::Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let took = started.elapsed();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(1), "took {took:?} to exit");
    let left = common::programs_left_after("process_", Duration::from_secs(2));
    assert!(left.is_empty(), "programs left loaded: {left:?}");
}

/// The perf-buffer transport (the fallback for kernels before 5.8) delivers the same events.
#[test]
fn perf_transport_delivers_exec() {
    if skip_unless_root("perf_transport_delivers_exec") {
        return;
    }
    let _serial = kernel_lock();
    let loader = Loader::start(&["--monitors", "process", "--transport", "perf", "--metrics-address", "off"]);
    let mut seen = Vec::new();
    let mut child = Command::new("/bin/true").arg("over-perf").spawn().expect("spawn /bin/true");
    let pid = child.id() as u64;
    let got = loader
        .wait_for(&mut seen, Duration::from_secs(5), |e| e["event"] == "exec" && e["tgid"] == pid)
        .expect("exec over the perf transport never arrived");
    assert_eq!(got.event["argv"], serde_json::json!(["/bin/true", "over-perf"]));
    // Its exit is in a perf buffer once wait() returns; the loader drains them all on SIGTERM.
    child.wait().expect("wait for /bin/true");
    assert_eq!(got.event["ppid"], std::process::id() as u64);
    let (events, stderr, status) = loader.finish();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("transport=perf"), "the run must say it used perf: {stderr}");
    assert!(
        events.iter().chain(&seen).any(|e| e["event"] == "exit" && e["tgid"] == pid),
        "exit of /bin/true missing"
    );
}

/// Processes whose threads all end at the same instant (issue 15, item 3), both ways a process
/// ends: exit_group() from every thread, and every thread's own exit(), the leader's included.
/// Each process's threads are started 200 ms after the process. Every process must be reported
/// exactly once, with the exit code wait() returned (which thread's code that is depends on the
/// kernel: see `ThreadsExit::Each`) and a `duration_ns` counted from the process's start (at
/// least the 200 ms), not from the start of whichever thread was last out.
#[test]
fn threads_exiting_together_report_one_exit_timed_from_the_process_start() {
    if skip_unless_root("threads_exiting_together_report_one_exit_timed_from_the_process_start") {
        return;
    }
    let _serial = kernel_lock();
    let loader = Loader::start(&["--monitors", "process"]);
    const LATE_MS: u64 = 200;
    const ROUNDS: usize = 30;
    let scenario = env!("CARGO_BIN_EXE_tapio-scenario");
    let mut runs = Vec::new();
    for mode in [tapio_testkit::workload::ThreadsExit::Group, tapio_testkit::workload::ThreadsExit::Each] {
        // Several at once: their exits land together on both CPUs.
        let children: Vec<_> = (0..ROUNDS)
            .map(|_| {
                Command::new(scenario)
                    .args(["threads-exit", "8", &LATE_MS.to_string(), mode.name()])
                    .spawn()
                    .expect("spawn tapio-scenario threads-exit")
            })
            .collect();
        for mut child in children {
            let pid = child.id() as u64;
            let status = child.wait().expect("wait for threads-exit");
            runs.push((mode, pid, status.code()));
        }
    }
    let (events, stderr, status) = loader.finish();
    assert!(status.success(), "{stderr}");
    let mut problems = Vec::new();
    for (mode, pid, code) in runs {
        let what = format!("{} pid {pid}", mode.name());
        let Some(code) = code.filter(|c| mode.wait_codes().contains(c)) else {
            problems.push(format!("{what}: wait() status {code:?}, the workload is broken"));
            continue;
        };
        let exits: Vec<&Value> = events.iter().filter(|e| e["event"] == "exit" && e["tgid"] == pid).collect();
        if exits.len() != 1 {
            problems.push(format!("{what}: {} exit events (want 1)", exits.len()));
        }
        for e in exits {
            if e["exit_code"] != i64::from(code) {
                problems.push(format!("{what}: exit_code {} (wait() said {code})", e["exit_code"]));
            }
            let took = e["duration_ns"].as_u64().unwrap_or(0);
            if took < LATE_MS * 1_000_000 {
                problems.push(format!("{what}: duration_ns {took} is less than the process's {LATE_MS} ms before its threads started"));
            }
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}
