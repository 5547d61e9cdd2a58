//! The process monitor through the agent: prompt delivery to stdout, the perf transport flag, a
//! clean detach on SIGINT, and many processes whose threads end at once (a heavier run than the
//! scenario's: 60 processes of 9 threads, on both CPUs). Lineage (a traced child forked by a
//! non-leader thread, an exec from another thread, argv and exit codes) is the shared scenario
//! process.lineage, and the exec chain process.exec_chain (tapio-scenarios, run on this kernel by
//! verifier-matrix/guest/tests/scenarios.rs and in every VM of the matrix).

mod common;

use std::{process::Command, time::Duration};

use common::{kernel_lock, loaded_program_names, skip_unless_root, Loader};
use serde_json::Value;

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
