//! The advanced monitor on the real kernel: dedup, sampling, batching, the time bound, and
//! statistics that add up. Most tests drive the library directly (they change rates at run time
//! and read the per-CPU counters); one runs `tapio-load run` end to end. A flood of identical
//! events collapsing to one event, and the next window reporting what the last one suppressed,
//! are checked by the shared scenario advanced.flood_dedup (tapio-scenarios, run on this kernel
//! by verifier-matrix/guest/tests/scenarios.rs and in every VM of the matrix).

mod common;

use std::time::{Duration, Instant};

use tapio_decode::events::{self, DecodeOptions, Event};
use tapio_runtime::monitors::{self, advanced::{self, AdvancedOptions, AdvancedStats}, LoadOptions, LoadedMonitor};

const GETPPID: u32 = libc::SYS_getppid as u32;

/// Loads the advanced monitor watching only this process's getppid calls.
fn load(mut options: AdvancedOptions) -> LoadedMonitor {
    tapio_features::privileges::raise_memlock();
    options.target_tgid = std::process::id();
    options.syscalls = vec![GETPPID];
    let btf = aya::Btf::from_sys_fs().expect("kernel BTF");
    monitors::load(&advanced::SPEC, Some(&btf), &LoadOptions { advanced: options, ring_size: Some(16 << 20), ..Default::default() })
        .unwrap_or_else(|e| panic!("load advanced: {e}"))
}

/// getppid with `tag` in the first argument register: the kernel ignores it, the tracepoint
/// reports it as arg0 (part of the dedup identity), so it must not be left to chance.
fn getppid_tagged(tag: u64) {
    // SAFETY: getppid ignores its arguments and has no side effects.
    unsafe { libc::syscall(libc::SYS_getppid, tag) };
}

/// `n` getppid calls from a fresh thread (one dedup identity); returns that thread's id.
fn getppid_flood(n: usize) -> u32 {
    std::thread::spawn(move || {
        for _ in 0..n {
            getppid_tagged(0);
        }
        // SAFETY: gettid has no preconditions.
        unsafe { libc::syscall(libc::SYS_gettid) as u32 }
    })
    .join()
    .expect("flood thread")
}

/// Every record in the ring now, decoded; each record's events with their record's count.
fn drain(m: &mut LoadedMonitor) -> Vec<Vec<Event>> {
    let mut records = Vec::new();
    while let Some(item) = m.events.next() {
        records.push(events::decode_all(&item, &DecodeOptions::default()).expect("decode advanced record"));
    }
    records
}

/// Waits until no event is buffered (the time bound flushes) and returns the counters.
fn settled(m: &mut LoadedMonitor, records: &mut Vec<Vec<Event>>) -> AdvancedStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        records.extend(drain(m));
        let s = advanced::stats(&m.ebpf).expect("stats");
        if s.buffered == 0 || Instant::now() > deadline {
            records.extend(drain(m));
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_adds_up(s: &AdvancedStats) {
    assert_eq!(s.seen, s.sent + s.sampled + s.deduped + s.dropped + s.buffered, "stats do not add up: {s:?}");
}

fn ours(records: &[Vec<Event>], tid: u32) -> Vec<&Event> {
    records.iter().flatten().filter(|e| e.pid == tid).collect()
}

fn body(e: &Event) -> &events::advanced::AdvancedBody {
    match &e.body {
        events::Body::Advanced(b) => b,
        other => panic!("not an advanced body: {other:?}"),
    }
}

#[test]
fn sampling_rates_per_type_apply_at_load_and_at_run_time() {
    if common::skip_unless_root("advanced sampling") {
        return;
    }
    let _k = common::kernel_lock();
    let mut options = AdvancedOptions { flush_interval: Duration::from_millis(20), ..Default::default() };
    options.rates.insert(GETPPID, 0.0);
    let mut m = load(options);
    let mut records = Vec::new();

    // Rate 0 at load: nothing of that type.
    let tid = getppid_flood(5_000);
    let s0 = settled(&mut m, &mut records);
    assert_eq!(ours(&records, tid).len(), 0);
    assert_eq!(s0.sampled, 5_000, "{s0:?}");
    assert_adds_up(&s0);

    // Rate 1 at run time: all of them.
    advanced::set_rate(&m.ebpf, GETPPID, 1.0).unwrap();
    let tid = getppid_flood(5_000);
    let s1 = settled(&mut m, &mut records);
    assert_eq!(ours(&records, tid).len(), 5_000, "{s1:?}");
    assert_adds_up(&s1);

    // 1 in 10: 10% within 15% of the expectation (about 7 standard deviations at n = 40000).
    advanced::set_rate(&m.ebpf, GETPPID, 0.1).unwrap();
    const N: usize = 40_000;
    let tid = getppid_flood(N);
    let s2 = settled(&mut m, &mut records);
    let kept = ours(&records, tid).len() as f64;
    let expected = N as f64 * 0.1;
    assert!((kept - expected).abs() < expected * 0.15, "kept {kept} of {N} at rate 0.1");
    assert_adds_up(&s2);
    println!("sampling 0.1: kept {kept} of {N}");
}

#[test]
fn batches_carry_n_events_and_a_quiet_cpu_flushes_within_the_bound() {
    if common::skip_unless_root("advanced batching") {
        return;
    }
    let _k = common::kernel_lock();
    let bound = Duration::from_millis(50);
    let mut m = load(AdvancedOptions { batch_size: 16, flush_interval: bound, ..Default::default() });
    let mut records = Vec::new();
    let tid = getppid_flood(1_600);
    let s = settled(&mut m, &mut records);
    let mine: Vec<&Vec<Event>> = records.iter().filter(|r| r.iter().any(|e| e.pid == tid)).collect();
    let total: usize = mine.iter().map(|r| r.len()).sum();
    assert_eq!(total, 1_600, "{s:?}");
    for r in &mine {
        assert!(!r.is_empty() && r.len() <= 16, "record of {}", r.len());
        assert!(r.iter().all(|e| body(e).batch_count as usize == r.len()), "count field disagrees");
    }
    let full = mine.iter().filter(|r| r.len() == 16).count();
    assert!(full * 16 >= 1_600 / 2, "most events travel in full batches: {full} full of {}", mine.len());
    assert!(mine.iter().flat_map(|r| r.iter()).all(|e| body(e).numa_node < 1024), "numa node recorded");
    assert_adds_up(&s);

    // A partial batch: 3 events, then the thread sleeps; they must arrive within the bound plus
    // scheduling slack, without any further event on that CPU.
    drain(&mut m);
    let tid = getppid_flood(3);
    let sent_at = Instant::now();
    let deadline = sent_at + Duration::from_secs(2);
    let mut got = Vec::new();
    while got.len() < 3 && Instant::now() < deadline {
        for r in drain(&mut m) {
            got.extend(r.into_iter().filter(|e| e.pid == tid));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let waited = sent_at.elapsed();
    assert_eq!(got.len(), 3, "partial batch never flushed");
    println!("partial batch of 3 arrived after {waited:?} (bound {bound:?})");
    assert!(waited < bound * 4, "partial batch took {waited:?} with a {bound:?} bound");
}

#[test]
fn run_writes_one_json_event_per_batched_event() {
    if common::skip_unless_root("advanced run") {
        return;
    }
    let _k = common::kernel_lock();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tapio.toml");
    std::fs::write(&config, "monitors = [\"advanced\"]\nbatch_size = 8\nflush_interval_ms = 20\nmetrics_address = \"off\"\n").unwrap();
    let loader = common::Loader::start(&["--config", config.to_str().unwrap()]);
    // close() of fds that cannot exist: watched by default, and tagged by their argument.
    const BASE: i32 = 900_000;
    for i in 0..20 {
        // SAFETY: closing an fd number this process never opened fails with EBADF.
        unsafe { libc::close(BASE + i) };
    }
    let mut seen = Vec::new();
    let mut found = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while found.len() < 20 && Instant::now() < deadline {
        if let Some(r) = loader.wait_for(&mut seen, Duration::from_secs(1), |e| {
            e["monitor"] == "advanced" && e["arg0"].as_u64().is_some_and(|a| (BASE as u64..BASE as u64 + 20).contains(&a))
        }) {
            let e = r.event;
            assert_eq!(e["event"], "syscall");
            assert_eq!(e["syscall_nr"], libc::SYS_close);
            assert_eq!(e["tgid"], std::process::id());
            assert!(e["numa_node"].is_u64() && e["cpu"].is_u64() && e["batch_count"].as_u64().unwrap() <= 8, "{e}");
            found.insert(e["arg0"].as_u64().unwrap());
        }
    }
    let (_, stderr, _) = loader.finish();
    assert_eq!(found.len(), 20, "closes seen: {found:?}\nstderr:\n{stderr}");
}

/// The event path is the raw `sys_enter` tracepoint wherever raw tracepoints exist (4.17+), so a
/// syscall outside the watched set costs only the pre-filter (no perf trace record is filled
/// first); the classic tracepoint is only the fallback. A burst of unwatched syscalls from the
/// target process is counted `filtered` and becomes no event, while a watched one still carries
/// its first argument, read from the user registers.
#[test]
fn the_raw_tracepoint_is_the_event_path_and_unwatched_syscalls_stop_at_the_filter() {
    if common::skip_unless_root("advanced raw tracepoint") {
        return;
    }
    let _k = common::kernel_lock();
    let mut m = load(AdvancedOptions { batch_size: 1, flush_interval: Duration::from_millis(20), ..Default::default() });
    let paths: Vec<(&str, &str)> = m.reports.iter().map(|r| (r.program, r.path.as_str())).collect();
    assert!(paths.contains(&("advanced_sys_enter", "raw_tracepoint:sys_enter")), "{paths:?}");
    assert!(!paths.iter().any(|(p, _)| *p == "advanced_sys_enter_tp"), "the fallback is not attached too: {paths:?}");

    let before = advanced::stats(&m.ebpf).expect("stats");
    const N: u64 = 5_000;
    let tid = std::thread::spawn(|| {
        for _ in 0..N {
            // SAFETY: getpid has no preconditions; it is not in the watched set.
            unsafe { libc::syscall(libc::SYS_getpid) };
        }
        getppid_tagged(0x7a_9105);
        // SAFETY: no preconditions.
        unsafe { libc::syscall(libc::SYS_gettid) as u32 }
    })
    .join()
    .expect("burst thread");
    let mut records = Vec::new();
    let after = settled(&mut m, &mut records);
    assert!(after.filtered - before.filtered >= N, "{N} unwatched syscalls are counted filtered: {before:?} -> {after:?}");
    let mine = ours(&records, tid);
    assert_eq!(mine.len(), 1, "only the watched getppid becomes an event: {mine:?}");
    assert_eq!((body(mine[0]).syscall_nr, body(mine[0]).arg0), (GETPPID, 0x7a_9105), "{:?}", mine[0]);
    assert_adds_up(&after);
}
