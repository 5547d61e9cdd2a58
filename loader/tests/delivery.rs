//! Delivery policy (issue 13, "Deliver 1"): under the default `batched` policy a record does not
//! wake the reader until the buffer is a quarter full, and the reader's backoff timer still brings
//! a lone record to the output within the bound, on the ring buffer and on perf buffers alike.

mod common;

use std::{
    os::fd::{AsFd, AsRawFd},
    process::Command,
    time::Duration,
};

use aya::{programs::Xdp, EbpfLoader};
use common::{kernel_lock, skip_unless_root, Loader};
use tapio_bundle::{Transport, FIXTURE_BENCH_PRODUCER};
use tapio_runtime::{
    monitors::{xdp_filter::{test_run, udp4_frame}, WAKEUP_BYTES},
    transport::{Delivery, DeliveryPolicy, EventSource, DEFAULT_RING_SIZE},
};

/// The default bound (docs/operations.md): the run under test must say it uses it.
const BOUND: Duration = Duration::from_millis(10);
/// What the machine may add on top of the bound: scheduling on a shared 2-CPU VM, the pipe to
/// this test, the runtime's 1 ms timer granularity. Generous on purpose; what fails without the
/// timer is a record that never arrives (or arrives only when other work fills the buffer).
const SLACK: Duration = Duration::from_millis(150);
/// Separate execs per run, each after a quiet spell in which the drain timer backs off fully.
const ROUNDS: usize = 5;

/// Waits up to `timeout` for a wake-up on `source`'s buffers (its epoll fd); true if one came.
fn woken(source: &EventSource, timeout: Duration) -> bool {
    let mut event = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: event is a valid epoll_event array of length 1.
    let n = unsafe { libc::epoll_wait(source.as_raw_fd(), &mut event, 1, timeout.as_millis() as libc::c_int) };
    assert!(n >= 0, "epoll_wait: {}", std::io::Error::last_os_error());
    n > 0
}

/// The ring producer fixture (probes/fixtures/bench_producer.bpf.c: 32 exec records of 1360
/// bytes per run, through the monitors' own tapio_emit) loaded with `wakeup_bytes`.
fn producer(wakeup_bytes: u64) -> (aya::Ebpf, std::os::fd::OwnedFd, EventSource) {
    let mut ebpf = EbpfLoader::new()
        .override_global(WAKEUP_BYTES, &wakeup_bytes, true)
        .load(FIXTURE_BENCH_PRODUCER)
        .expect("load bench_producer");
    let program: &mut Xdp = ebpf.program_mut("bench_producer").expect("bench_producer").try_into().expect("an XDP program");
    program.load().expect("verifier accepts bench_producer");
    let prog = program.fd().expect("program fd").as_fd().try_clone_to_owned().expect("dup program fd");
    let ring = ebpf.take_map("events").expect("events map");
    let source = EventSource::open(ring, Transport::Ringbuf, &Delivery::default()).expect("open the ring");
    (ebpf, prog, source)
}

fn run_once(prog: &std::os::fd::OwnedFd) {
    let packet = udp4_frame(std::net::Ipv4Addr::new(10, 0, 0, 1), std::net::Ipv4Addr::new(10, 0, 0, 2), 64);
    test_run(prog.as_fd(), &packet, 1).expect("BPF_PROG_TEST_RUN of bench_producer");
}

/// Kernel side of `batched`: 32 records (43,776 bytes with their ring headers) stay below a
/// quarter of the 256 KiB ring and wake nobody, yet are there to read; the next 32 cross the
/// threshold and wake the reader. Under `immediate` the first record wakes it.
#[test]
fn batched_records_wake_the_reader_only_past_the_threshold() {
    if skip_unless_root("batched_records_wake_the_reader_only_past_the_threshold") {
        return;
    }
    let batched = Delivery::default();
    assert_eq!(batched.policy, DeliveryPolicy::Batched);
    let (_ebpf, prog, mut source) = producer(batched.ring_wakeup_bytes(DEFAULT_RING_SIZE));
    run_once(&prog);
    assert!(!woken(&source, Duration::from_millis(300)), "batched: 32 records below the threshold woke the reader");
    assert!(source.has_data(), "batched: the records must be in the ring all the same");
    assert!(source.wait(Duration::from_secs(1)).expect("wait"), "wait() must see records that came without a wake-up");
    run_once(&prog);
    assert!(woken(&source, Duration::from_secs(5)), "batched: crossing a quarter of the ring did not wake the reader");
    let mut records = Vec::new();
    source.drain(&mut records);
    assert_eq!(records.len(), 64);

    let immediate = Delivery { policy: DeliveryPolicy::Immediate, ..batched };
    let (_ebpf, prog, source) = producer(immediate.ring_wakeup_bytes(DEFAULT_RING_SIZE));
    run_once(&prog);
    assert!(woken(&source, Duration::from_secs(5)), "immediate: a record did not wake the reader");
}

/// Runs `tapio-load run` with `extra` and, ROUNDS times after a quiet spell, one exec; each must
/// reach the output within the bound plus slack of its kernel timestamp.
fn lone_exec_within_the_bound(test: &str, extra: &[&str]) {
    if skip_unless_root(test) {
        return;
    }
    let _serial = kernel_lock();
    let mut args = vec!["--monitors", "process", "--metrics-address", "off"];
    args.extend_from_slice(extra);
    let loader = Loader::start(&args);
    let log = loader.stderr.lock().unwrap().clone();
    assert!(log.contains("batched (bound 10 ms)"), "the run must name the default policy and bound: {log}");
    let mut seen = Vec::new();
    let mut latencies = Vec::new();
    for round in 0..ROUNDS {
        // Quiet: long enough for the drain timer to back off to the bound (0.5 ms doubling).
        std::thread::sleep(Duration::from_millis(100));
        let marker = format!("tapio-delivery-{round}");
        let mut child = Command::new("/bin/true").arg(&marker).spawn().expect("spawn /bin/true");
        let pid = u64::from(child.id());
        child.wait().expect("wait for /bin/true");
        let got = loader
            .wait_for(&mut seen, Duration::from_secs(5), |e| e["event"] == "exec" && e["tgid"] == pid)
            .unwrap_or_else(|| panic!("{test}: round {round}: the exec of /bin/true never reached the output"));
        assert_eq!(got.event["argv"][1], marker.as_str());
        let latency = Duration::from_nanos(got.read_ns.saturating_sub(got.event["ts_ns"].as_u64().expect("ts_ns")));
        latencies.push(latency);
    }
    let (_, stderr, status) = loader.finish();
    assert!(status.success(), "{stderr}");
    println!("{test}: exec to output: {latencies:?}");
    for (round, latency) in latencies.iter().enumerate() {
        assert!(
            *latency <= BOUND + SLACK,
            "{test}: round {round}: the exec reached the output after {latency:?}, past the bound {BOUND:?} + slack {SLACK:?} (all: {latencies:?})"
        );
    }
}

#[test]
fn lone_exec_reaches_the_output_within_the_bound() {
    lone_exec_within_the_bound("lone_exec_reaches_the_output_within_the_bound", &[]);
}

#[test]
fn lone_exec_reaches_the_output_within_the_bound_over_perf() {
    lone_exec_within_the_bound("lone_exec_reaches_the_output_within_the_bound_over_perf", &["--transport", "perf"]);
}

/// `plan` names the policy in force and its bound, from the defaults, the flags and the file.
#[test]
fn plan_names_the_delivery_policy() {
    let plan = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tapio-load")).arg("plan").args(["--monitors", "process"]).args(args).output().expect("run plan");
        assert!(out.status.success(), "plan {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let text = plan(&[]);
    assert!(text.lines().nth(1).is_some_and(|l| l.starts_with("delivery batched (bound 10 ms)")), "{text}");
    let text = plan(&["--delivery", "immediate", "--delivery-bound-ms", "5"]);
    assert!(text.contains("delivery immediate (bound 5 ms): every record wakes the reader"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&plan(&["--json"])).expect("plan --json");
    assert_eq!(json["delivery"], serde_json::json!({ "policy": "batched", "bound_ms": 10 }), "{json}");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tapio.toml");
    std::fs::write(&file, "delivery = \"immediate\"\ndelivery_bound_ms = 20\n").expect("write config");
    let text = plan(&["--config", file.to_str().expect("utf-8 path")]);
    assert!(text.contains("delivery immediate (bound 20 ms)"), "{text}");
}

/// `--delivery immediate` (today's behaviour before policies: a wake-up per record, no timer)
/// still delivers, and says so.
#[test]
fn immediate_policy_delivers_without_a_timer() {
    if skip_unless_root("immediate_policy_delivers_without_a_timer") {
        return;
    }
    let _serial = kernel_lock();
    let loader = Loader::start(&["--monitors", "process", "--metrics-address", "off", "--delivery", "immediate"]);
    let mut seen = Vec::new();
    let mut child = Command::new("/bin/true").arg("tapio-immediate").spawn().expect("spawn /bin/true");
    let pid = u64::from(child.id());
    child.wait().expect("wait for /bin/true");
    let got = loader.wait_for(&mut seen, Duration::from_secs(5), |e| e["event"] == "exec" && e["tgid"] == pid);
    let (_, stderr, status) = loader.finish();
    assert!(got.is_some(), "the exec of /bin/true never reached the output; stderr:\n{stderr}");
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("immediate (bound 10 ms): every record wakes the reader, no drain timer"), "{stderr}");
}

/// Under `immediate` the reader has no timer: a wake-up it misses is never made up, and since the
/// kernel wakes it only for a record it finds the reader caught up with, every later record
/// waits too. Here every record of two seconds at 100,000 records/s must reach the reader through
/// wake-ups alone.
///
/// The race this guards against (the reader's "caught up" check without a full fence against the
/// kernel's commit, see transport/ring.rs) is a store-buffer reordering: the release-built
/// delivery benchmark hit it in 5 of 6 runs, but this debug-built test did not in 2 runs without
/// the fence, its loop being too slow to open the window. It checks the behaviour, not the fence.
#[test]
fn immediate_reader_never_misses_a_wake_up() {
    if skip_unless_root("immediate_reader_never_misses_a_wake_up") {
        return;
    }
    let immediate = Delivery { policy: DeliveryPolicy::Immediate, ..Delivery::default() };
    let mut ebpf = EbpfLoader::new().override_global(WAKEUP_BYTES, &0u64, true).load(FIXTURE_BENCH_PRODUCER).expect("load bench_producer");
    // One (zeroed) record per run: the content does not matter here, only its arrival.
    let mut mode: aya::maps::Array<_, u32> = aya::maps::Array::try_from(ebpf.map_mut("bench_mode").expect("bench_mode")).expect("array");
    mode.set(0, 2, 0).expect("one record per run");
    let program: &mut Xdp = ebpf.program_mut("bench_producer").expect("bench_producer").try_into().expect("an XDP program");
    program.load().expect("verifier accepts bench_producer");
    let prog = program.fd().expect("program fd").as_fd().try_clone_to_owned().expect("dup program fd");
    let source = EventSource::open(ebpf.take_map("events").expect("events map"), Transport::Ringbuf, &immediate).expect("open the ring");
    let done = std::sync::atomic::AtomicBool::new(false);
    let (sent, received) = std::thread::scope(|scope| {
        let producer = scope.spawn(|| {
            let packet = udp4_frame(std::net::Ipv4Addr::new(10, 0, 0, 1), std::net::Ipv4Addr::new(10, 0, 0, 2), 64);
            let start = std::time::Instant::now();
            let mut sent = 0u64;
            while start.elapsed() < Duration::from_secs(2) {
                let due = start + Duration::from_secs_f64(sent as f64 / 100_000.0);
                while std::time::Instant::now() < due {
                    std::hint::spin_loop();
                }
                test_run(prog.as_fd(), &packet, 1).expect("BPF_PROG_TEST_RUN of bench_producer");
                sent += 1;
            }
            done.store(true, std::sync::atomic::Ordering::Release);
            sent
        });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let received = runtime.block_on(async {
            let mut streamer = tapio_runtime::transport::Streamer::new(vec![source], immediate).expect("register the ring");
            let mut received = 0u64;
            let mut quiet_since = std::time::Instant::now();
            loop {
                // Wake-ups alone: a generous 1 s of silence after the producer stopped ends it.
                match tokio::time::timeout(Duration::from_millis(100), streamer.ready()).await {
                    Ok(ready) => ready.expect("wait for the ring"),
                    Err(_) if done.load(std::sync::atomic::Ordering::Acquire) && quiet_since.elapsed() > Duration::from_secs(1) => break,
                    Err(_) => continue,
                }
                let n = streamer.drain_each(|_| Ok::<_, ()>(())).expect("drain");
                if n > 0 {
                    received += n as u64;
                    quiet_since = std::time::Instant::now();
                }
            }
            received
        });
        (producer.join().expect("producer thread"), received)
    });
    let emitted: u64 = aya::maps::PerCpuArray::<_, u64>::try_from(ebpf.map("stats").expect("stats"))
        .expect("stats map")
        .get(&0, 0)
        .expect("stats[0]")
        .iter()
        .sum();
    println!("immediate_reader_never_misses_a_wake_up: sent {sent}, emitted {emitted}, received {received}");
    assert!(emitted > 0);
    assert_eq!(received, emitted, "records emitted but never delivered by a wake-up: the reader missed one and stalled");
}
