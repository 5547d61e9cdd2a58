//! The Prometheus endpoint on the real kernel: a loader started from a config file serves
//! metrics that a real parser (`promtool check metrics`) accepts, whose counters follow real
//! activity, and a `/healthz` that is 200 while every planned program is attached.

mod common;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// A port free right now (bound then released; the loader binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local addr").port()
}

/// A plain HTTP GET: status code and body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect to metrics port {port}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end in {response:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line: {head}"));
    (status, body.to_owned())
}

/// The value of the sample whose name and labels start with `prefix`.
fn sample(page: &str, prefix: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{page}"))
}

fn promtool_check(page: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool installed (Debian package prometheus)");
    child.stdin.take().expect("stdin").write_all(page.as_bytes()).expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics refused the page:\n{}{}\n--- page ---\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_follow_real_execs_and_pass_promtool() {
    if common::skip_unless_root("metrics_follow_real_execs_and_pass_promtool") {
        return;
    }
    let _kernel = common::kernel_lock();
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tapio.toml");
    std::fs::write(
        &config,
        format!("monitors = [\"process\"]\nmetrics_address = \"127.0.0.1:{port}\"\nargv_max = 8\n"),
    )
    .expect("write config");
    let loader = common::Loader::start(&["--config", config.to_str().expect("utf-8 path")]);

    let (status, health) = get(port, "/healthz");
    assert_eq!(status, 200, "/healthz: {health}");
    let (status, before) = get(port, "/metrics");
    assert_eq!(status, 200, "/metrics: {before}");
    promtool_check(&before);
    let emitted_before = sample(&before, "tapio_events_emitted_total{monitor=\"process\"}");
    // The plan for this kernel, from `tapio-load plan`, is what is owed and what is attached.
    let expected = common::planned_programs("process");
    assert!(expected > 0);
    assert_eq!(health, format!("ok: {expected} of {expected} planned programs attached\n"));
    let attached = before.lines().filter(|l| l.starts_with("tapio_program_attached{") && l.ends_with(" 1")).count();
    assert_eq!(sample(&before, "tapio_programs_planned"), expected as f64, "{before}");
    assert_eq!(attached, expected, "{before}");
    assert!(before.contains("tapio_program_attached{monitor=\"process\""), "{before}");

    for _ in 0..5 {
        Command::new("/bin/true").status().expect("run /bin/true");
    }
    // Events reach the kernel counter at once and the output a batch later: poll both.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let (_, page) = get(port, "/metrics");
        let grown = sample(&page, "tapio_events_emitted_total{monitor=\"process\"}") >= emitted_before + 5.0
            && sample(&page, "tapio_events_written_total") >= 5.0;
        if grown || Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    promtool_check(&after);
    assert!(
        sample(&after, "tapio_events_emitted_total{monitor=\"process\"}") >= emitted_before + 5.0,
        "5 execs did not move the emitted counter:\nbefore:\n{before}\nafter:\n{after}"
    );
    assert!(sample(&after, "tapio_events_written_total") >= 5.0, "{after}");
    assert_eq!(sample(&after, "tapio_decode_errors_total"), 0.0, "{after}");

    let (status, _) = get(port, "/nope");
    assert_eq!(status, 404);
    let (_, stderr, exit) = loader.finish();
    assert!(exit.success(), "tapio-load failed: {stderr}");
}

#[test]
fn sighup_reloads_without_detaching() {
    if common::skip_unless_root("sighup_reloads_without_detaching") {
        return;
    }
    let _kernel = common::kernel_lock();
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tapio.toml");
    let write = |argv_max: u32| {
        std::fs::write(&config, format!("metrics_address = \"127.0.0.1:{port}\"\nargv_max = {argv_max}\n")).expect("write config")
    };
    write(8);
    let loader = common::Loader::start(&["--config", config.to_str().expect("utf-8 path")]);
    let ids = |page: &str| -> Vec<String> { page.lines().filter(|l| l.starts_with("tapio_program_id{")).map(str::to_owned).collect() };
    let (_, before) = get(port, "/metrics");

    // An invalid file is refused and counted; a valid one is applied. Both keep the programs.
    // Each step waits for its counter: the loader reads the file when it handles the signal.
    let await_counter = |name: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, page) = get(port, "/metrics");
            if sample(&page, name) >= 1.0 || Instant::now() > deadline {
                break page;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    std::fs::write(&config, "argv_max = 0\n").expect("write bad config");
    loader.signal(libc::SIGHUP);
    await_counter("tapio_config_reload_errors_total");
    write(2);
    loader.signal(libc::SIGHUP);
    let after = await_counter("tapio_config_reloads_total");
    assert_eq!(sample(&after, "tapio_config_reload_errors_total"), 1.0, "{after}");
    assert_eq!(sample(&after, "tapio_config_reloads_total"), 1.0, "{after}");
    assert_eq!(ids(&before), ids(&after), "program ids changed across SIGHUP");
    assert!(!ids(&after).is_empty(), "{after}");

    // argv_max = 2 now applies to new execs.
    let mut seen = Vec::new();
    Command::new("/bin/echo").args(["a", "b", "c", "d"]).stdout(Stdio::null()).status().expect("run echo");
    let exec = loader
        .wait_for(&mut seen, Duration::from_secs(10), |e| e["event"] == "exec" && e["filename"].as_str().is_some_and(|f| f.ends_with("/echo")))
        .unwrap_or_else(|| panic!("no exec of echo; saw {seen:?}"));
    assert_eq!(exec.event["argv"].as_array().map(Vec::len), Some(2), "{}", exec.event);
    let (_, stderr, exit) = loader.finish();
    assert!(exit.success(), "tapio-load failed: {stderr}");
}

#[test]
fn sighup_sampling_rate_changes_sampled_out_rate() {
    if common::skip_unless_root("sighup_sampling_rate_changes_sampled_out_rate") {
        return;
    }
    let _kernel = common::kernel_lock();
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tapio.toml");
    // The advanced monitor reports every read, write, openat and close on the node: to
    // /dev/null, so the test's own pipe reads do not feed it.
    let write = |rate: f64| {
        std::fs::write(
            &config,
            format!("monitors = [\"advanced\"]\nmetrics_address = \"127.0.0.1:{port}\"\noutput = \"/dev/null\"\n\n[sampling]\nadvanced = {rate:?}\n"),
        )
        .expect("write config")
    };
    write(1.0);
    let loader = common::Loader::start(&["--config", config.to_str().expect("utf-8 path")]);
    let ids = |page: &str| -> Vec<String> { page.lines().filter(|l| l.starts_with("tapio_program_id{")).map(str::to_owned).collect() };
    let sampled = |page: &str| sample(page, "tapio_events_sampled_out_total{monitor=\"advanced\"}");
    // close(-1) enters the syscall (and its tracepoint) and fails at once: a cheap, watched
    // syscall. The kernel counts it at entry, before close returns, so no wait is needed.
    const CALLS: u32 = 20_000;
    let burst = || {
        for _ in 0..CALLS {
            // SAFETY: closing an invalid fd only returns EBADF.
            unsafe { libc::close(-1) };
        }
    };

    let (_, before) = get(port, "/metrics");
    promtool_check(&before);
    assert!(before.contains("tapio_events_deduplicated_total{monitor=\"advanced\"}"), "{before}");
    burst();
    let (_, kept_all) = get(port, "/metrics");
    let at_full_rate = sampled(&kept_all) - sampled(&before);
    assert_eq!(at_full_rate, 0.0, "sampling = 1.0 sampled events out:\n{kept_all}");

    write(0.25);
    loader.signal(libc::SIGHUP);
    // The reload and the rate change happen together when the loader handles the signal.
    let deadline = Instant::now() + Duration::from_secs(10);
    let reloaded = loop {
        let (_, page) = get(port, "/metrics");
        if sample(&page, "tapio_config_reloads_total") >= 1.0 || Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(sample(&reloaded, "tapio_config_reloads_total"), 1.0, "SIGHUP not applied:\n{reloaded}");
    burst();
    let (_, after) = get(port, "/metrics");
    promtool_check(&after);
    let at_quarter_rate = sampled(&after) - sampled(&reloaded);
    // 3 in 4 of our calls are dropped (15000 expected); other processes' calls only add.
    assert!(
        at_quarter_rate >= f64::from(CALLS) * 0.6,
        "sampling = 0.25 sampled out {at_quarter_rate} of at least {CALLS} events:\n{after}"
    );
    assert_eq!(ids(&before), ids(&after), "program ids changed across SIGHUP");
    assert!(!ids(&after).is_empty(), "{after}");
    let (_, stderr, exit) = loader.finish();
    assert!(exit.success(), "tapio-load failed: {stderr}");
}
