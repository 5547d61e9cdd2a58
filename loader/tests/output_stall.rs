//! A reader of stdout that stops reading must not freeze the loader: the writer runs on its own
//! thread behind a bounded queue, so `/healthz` and `/metrics` keep answering, overflow is
//! counted in `tapio_output_dropped_total`, and SIGTERM still ends the run.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::{http_get_within, sample};

#[test]
fn a_stalled_stdout_leaves_healthz_and_metrics_answering() {
    if common::skip_unless_root("a_stalled_stdout_leaves_healthz_and_metrics_answering") {
        return;
    }
    let _kernel = common::kernel_lock();
    let port = common::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tapio.toml");
    std::fs::write(&config, format!("monitors = [\"process\"]\nmetrics_address = \"127.0.0.1:{port}\"\noutput_queue_events = 64\n"))
        .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tapio-load"))
        .args(["run", "--config", config.to_str().expect("utf-8 path")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tapio-load");
    // Held open and never read: once the pipe (64 KiB) is full, every write blocks.
    let stalled_stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let (ready_tx, ready_rx) = mpsc::channel();
    let log = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("streaming events") {
                let _ = ready_tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("tapio-load did not start:\n{}", log.join().unwrap_or_default());
    }

    // Execs until the queue overflows; /healthz must answer promptly all along.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut spawned = 0;
    let page = loop {
        for _ in 0..50 {
            Command::new("/bin/true").status().expect("run /bin/true");
        }
        spawned += 50;
        let health = http_get_within(port, "/healthz", Duration::from_secs(3));
        assert!(matches!(&health, Some((200, _))), "/healthz did not answer within 3 s after {spawned} execs with stdout stalled: {health:?}");
        let (status, page) = http_get_within(port, "/metrics", Duration::from_secs(3))
            .unwrap_or_else(|| panic!("/metrics did not answer within 3 s after {spawned} execs with stdout stalled"));
        assert_eq!(status, 200);
        if sample(&page, "tapio_output_dropped_total").unwrap_or(0.0) > 0.0 || Instant::now() > deadline {
            break page;
        }
    };
    let dropped = sample(&page, "tapio_output_dropped_total").expect("tapio_output_dropped_total");
    assert!(dropped > 0.0, "{spawned} execs with stdout stalled and a 64-event queue dropped nothing:\n{page}");
    assert_eq!(sample(&page, "tapio_output_queue_capacity"), Some(64.0), "{page}");
    assert!(sample(&page, "tapio_output_queue_events").is_some_and(|q| q <= 64.0), "{page}");
    println!("stalled stdout: {spawned} execs, {dropped} events dropped, /healthz and /metrics answered throughout");

    // SIGTERM ends the run though the writer is still blocked on the pipe.
    let stopped = Instant::now();
    // SAFETY: signalling our own child, which has not been waited for.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait tapio-load") {
            break Some(status);
        }
        if stopped.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    drop(stalled_stdout);
    let stderr = log.join().unwrap_or_default();
    assert!(status.is_some_and(|s| s.success()), "SIGTERM with stdout stalled: {status:?} after {:?}:\n{stderr}", stopped.elapsed());
    assert!(stderr.contains("output: queue full"), "overflow not logged:\n{stderr}");
}
