//! `make bench`, delivery part (issue 13, "Deliver 1" and the node-tax table's delivery rows):
//! how long a record takes from its emission in the kernel to the output, at 10, 1,000 and
//! 100,000 records/s, under both delivery policies and both transports; what the reader spends
//! doing it; what the producer pays per record; and what was dropped.
//!
//! The producer is probes/fixtures/bench_producer.bpf.c in its one-record mode (a fork record,
//! 80 bytes, stamped with `bpf_ktime_get_ns` just before `tapio_emit`), run by
//! `BPF_PROG_TEST_RUN` from a thread pinned to CPU 0 and paced to the rate. The ring build is
//! loaded with the policy's `tapio_wakeup_bytes` exactly as `tapio-load run` loads a monitor; the
//! perf build's buffers are opened by `transport::EventSource` with the policy's wake-up. The
//! reader, pinned to CPU 1, is the run loop's own: `transport::Streamer` on a current-thread tokio
//! runtime (wake-ups and the backoff timer), then `events::decode` and `JsonLines` (to
//! `io::sink()`), flushed per batch. A record's latency is CLOCK_MONOTONIC after its batch was
//! flushed minus its kernel timestamp (the same clock).
//!
//! Prints `BENCH delivery.<transport>_<policy>_<rate>_<figure>: ...` lines and writes
//! `target/bench/delivery.json` and `docs/benchmarks-delivery.md`.

use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{PerCpuArray, PerCpuValues},
    programs::Xdp,
    EbpfLoader,
};
use serde_json::{json, Value};
use tapio_abi::{
    process::{ProcessEvent, ProcessExecEvent, PROCESS_FORK},
    TapioHeader, MONITOR_PROCESS,
};
use tapio_bundle::{Transport, FIXTURE_BENCH_PRODUCER, FIXTURE_BENCH_PRODUCER_PERF};
use tapio_decode::events::{self, DecodeOptions};
use tapio_runtime::{
    monitors::{xdp_filter::{test_run, udp4_frame, XDP_PASS}, WAKEUP_BYTES},
    transport::{self, Delivery, DeliveryPolicy, EventSource, DEFAULT_RING_SIZE},
};
use tapio_load::output::json::JsonLines;
use tokio::sync::watch;

/// Rates and how long each is run: 100 records for a P99 at the low rate (the P99 of 100 is the
/// second highest), a short run at the high ones (the whole bench stays near a minute and a half).
const RATES: &[(u64, Duration)] = &[(10, Duration::from_secs(10)), (1_000, Duration::from_secs(3)), (100_000, Duration::from_secs(3))];
/// CPUs the producer and the reader are pinned to (when the machine has two).
const PRODUCER_CPU: usize = 0;
const READER_CPU: usize = 1;
/// `bench_mode` 2: one fork record per run.
const MODE_ONE_RECORD: u32 = 2;

/// One scenario's measurements.
struct Outcome {
    transport: Transport,
    policy: DeliveryPolicy,
    rate: u64,
    /// ns from emission to output, sorted.
    latencies: Vec<u64>,
    emitted: u64,
    dropped: u64,
    /// Records the producer sent per second, as achieved.
    achieved: f64,
    /// CPU time of the reader thread (runtime, drain, decode, JSON) over the whole scenario.
    reader_cpu: Duration,
    /// Wall time of the test-run syscalls per record: the program, the ring or perf write and
    /// whatever the wake-up costs the producer's CPU.
    producer_ns: f64,
}

impl Outcome {
    fn key(&self) -> String {
        format!("{}_{}_{}", self.transport, self.policy, rate_name(self.rate))
    }

    fn pct(&self, p: f64) -> f64 {
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[i] as f64 / 1e3
    }

    fn max_us(&self) -> f64 {
        *self.latencies.last().unwrap_or(&0) as f64 / 1e3
    }

    fn cpu_ms_per_100k(&self) -> f64 {
        self.reader_cpu.as_secs_f64() * 1e3 * 100_000.0 / self.latencies.len().max(1) as f64
    }
}

fn rate_name(rate: u64) -> String {
    match rate {
        r if r >= 1000 && r % 1000 == 0 => format!("{}k", r / 1000),
        r => r.to_string(),
    }
}

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP delivery: needs root (loading a BPF program and BPF_PROG_TEST_RUN)");
        return Ok(());
    }
    let pinned = thread::available_parallelism().map(|n| n.get()).unwrap_or(1) >= 2;
    let bound = Delivery::default();
    // `cargo bench --bench delivery -- ringbuf_immediate`: only the scenarios whose name contains
    // one of the words (no document is written then).
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let mut outcomes = Vec::new();
    for transport in [Transport::Ringbuf, Transport::Perf] {
        for &(rate, run_for) in RATES {
            for policy in [DeliveryPolicy::Batched, DeliveryPolicy::Immediate] {
                let name = format!("{transport}_{policy}_{}", rate_name(rate));
                if !only.is_empty() && !only.iter().any(|w| name.contains(w.as_str())) {
                    continue;
                }
                let delivery = Delivery { policy, ..bound };
                let o = run_scenario(transport, delivery, rate, run_for, pinned)
                    .with_context(|| format!("delivery scenario {transport} {policy} {rate}/s"))?;
                outcomes.push(o);
            }
        }
    }
    let figures = figures(&outcomes, &bound);
    for f in &figures {
        f.print();
    }
    if !only.is_empty() {
        return Ok(());
    }
    write_outputs(&outcomes, &figures, &bound, pinned)
}

fn run_scenario(transport: Transport, delivery: Delivery, rate: u64, run_for: Duration, pinned: bool) -> Result<Outcome> {
    let wakeup_bytes = delivery.ring_wakeup_bytes(DEFAULT_RING_SIZE);
    let mut loader = EbpfLoader::new();
    let object = match transport {
        Transport::Ringbuf => {
            loader.override_global(WAKEUP_BYTES, &wakeup_bytes, true);
            FIXTURE_BENCH_PRODUCER
        }
        Transport::Perf => FIXTURE_BENCH_PRODUCER_PERF,
    };
    let mut ebpf = loader.load(object).context("load probes/fixtures/bench_producer.bpf.c")?;
    fill_fork_record(&mut ebpf)?;
    let mut mode: aya::maps::Array<_, u32> =
        aya::maps::Array::try_from(ebpf.map_mut("bench_mode").context("no bench_mode map")?).context("bench_mode map")?;
    mode.set(0, MODE_ONE_RECORD, 0).context("write bench_mode")?;
    let program: &mut Xdp = ebpf.program_mut("bench_producer").context("no bench_producer")?.try_into().context("not XDP")?;
    program.load().context("the verifier refused bench_producer")?;
    let prog: OwnedFd = program.fd().context("program fd")?.as_fd().try_clone_to_owned().context("dup program fd")?;
    let map = ebpf.take_map("events").context("no events map")?;
    let source = EventSource::open(map, transport, &delivery).context("open the events map")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (produced, (latencies, reader_cpu)) = thread::scope(|scope| {
        let producer = scope.spawn(|| {
            let result = produce(&prog, rate, run_for, pinned);
            // Let the last records arrive the way they would on a quiet node (timer, not the
            // final drain), then stop the reader.
            thread::sleep(delivery.bound() * 3);
            let _ = stop_tx.send(true);
            result
        });
        let reader = read(source, delivery, stop_rx, pinned);
        let produced = producer.join().map_err(|_| anyhow::anyhow!("producer thread panicked"))?;
        anyhow::Ok((produced?, reader?))
    })?;
    let (sent, syscalls) = produced;

    let stats: PerCpuArray<_, u64> = PerCpuArray::try_from(ebpf.map("stats").context("no stats map")?).context("stats map")?;
    let sum = |i: u32| -> Result<u64> { Ok(stats.get(&i, 0).with_context(|| format!("stats[{i}]"))?.iter().sum()) };
    let (emitted, dropped) = (sum(0)?, sum(1)?);
    if latencies.len() as u64 != emitted {
        bail!("{} records reached the output but the producer emitted {emitted}", latencies.len());
    }
    Ok(Outcome {
        transport,
        policy: delivery.policy,
        rate,
        latencies,
        emitted,
        dropped,
        achieved: sent as f64 / run_for.as_secs_f64(),
        reader_cpu,
        producer_ns: syscalls.as_nanos() as f64 / sent.max(1) as f64,
    })
}

/// Writes the fork record (key 1 of `bench_records`, every CPU's slot) the one-record mode sends.
fn fill_fork_record(ebpf: &mut aya::Ebpf) -> Result<()> {
    const VALUE: usize = std::mem::size_of::<ProcessExecEvent>();
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"bench");
    let hdr = TapioHeader { ts_ns: 0, pid: 4242, tgid: 4242, cgroup_id: 1, uid: 0, monitor: MONITOR_PROCESS, kind: PROCESS_FORK, _pad0: 0, comm };
    let fork = ProcessEvent { hdr, ppid: 1, child_tgid: 4243, ..Default::default() };
    let mut value = [0u8; VALUE];
    // SAFETY: ProcessEvent is a repr(C) mirror of integers and byte arrays with explicit padding:
    // every byte is initialised.
    let bytes = unsafe { std::slice::from_raw_parts((&fork as *const ProcessEvent).cast::<u8>(), std::mem::size_of::<ProcessEvent>()) };
    value[..bytes.len()].copy_from_slice(bytes);
    let cpus = aya::util::nr_cpus().map_err(|(path, e)| anyhow::anyhow!("possible cpus ({path}): {e}"))?;
    let mut records: PerCpuArray<_, [u8; VALUE]> =
        PerCpuArray::try_from(ebpf.map_mut("bench_records").context("no bench_records map")?).context("bench_records map")?;
    records.set(1, PerCpuValues::try_from(vec![value; cpus]).context("per-cpu values")?, 0).context("write bench_records[1]")?;
    Ok(())
}

/// Sends one record per test run at `rate` for `run_for`; returns the runs made and the time spent
/// in them. Sleeps while the next run is far off (the low rates), spins the last stretch.
fn produce(prog: &OwnedFd, rate: u64, run_for: Duration, pinned: bool) -> Result<(u64, Duration)> {
    if pinned {
        pin_to(PRODUCER_CPU)?;
    }
    let packet = udp4_frame(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 64);
    let start = Instant::now();
    let (mut sent, mut busy) = (0u64, Duration::ZERO);
    while start.elapsed() < run_for {
        let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
        let now = Instant::now();
        if due > now + Duration::from_micros(300) {
            thread::sleep(due - now - Duration::from_micros(200));
        }
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let t = Instant::now();
        let run = test_run(prog.as_fd(), &packet, 1).context("BPF_PROG_TEST_RUN of bench_producer")?;
        busy += t.elapsed();
        if run.retval != XDP_PASS {
            bail!("bench_producer returned {} instead of XDP_PASS", run.retval);
        }
        sent += 1;
    }
    Ok((sent, busy))
}

/// The reader: `transport::Streamer` and the run loop's decode and write, on one thread. Returns
/// every record's latency (sorted) and the thread's CPU time.
fn read(source: EventSource, delivery: Delivery, stop: watch::Receiver<bool>, pinned: bool) -> Result<(Vec<u64>, Duration)> {
    if pinned {
        pin_to(READER_CPU)?;
    }
    let cpu_before = thread_cpu_time()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    let mut latencies = runtime.block_on(async move {
        let mut streamer = transport::Streamer::new(vec![source], delivery).context("register the event source")?;
        let mut stop = stop;
        let options = DecodeOptions::default();
        let mut sink = JsonLines::new(std::io::sink());
        let mut latencies = Vec::new();
        let mut stamps = Vec::new();
        loop {
            let stopping = tokio::select! {
                ready = streamer.ready() => { ready.context("wait for the buffers")?; false }
                _ = stop.changed() => true,
            };
            stamps.clear();
            streamer.drain_each(|record| {
                let event = events::decode(record, &options).context("decode")?;
                sink.write(&event).context("write JSON")?;
                stamps.push(event.ts_ns);
                anyhow::Ok(())
            })?;
            if !stamps.is_empty() {
                sink.flush().context("flush JSON")?;
                let now = monotonic_ns();
                latencies.extend(stamps.iter().map(|&ts| now.saturating_sub(ts)));
            }
            if stopping {
                break;
            }
        }
        anyhow::Ok(latencies)
    })?;
    let cpu = thread_cpu_time()?.saturating_sub(cpu_before);
    latencies.sort_unstable();
    Ok((latencies, cpu))
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn thread_cpu_time() -> Result<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        bail!("clock_gettime(CLOCK_THREAD_CPUTIME_ID): {}", std::io::Error::last_os_error());
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within it; sched_setaffinity reads
    // it for the size passed, and pid 0 is the calling thread.
    let ret = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if ret != 0 {
        bail!("sched_setaffinity to cpu {cpu}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Figures and outputs.

struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    reference: String,
    target: String,
    met: Option<bool>,
}

impl Figure {
    fn print(&self) {
        println!("BENCH {}: {:.1} {} (reference: {}, target: {})", self.name, self.value, self.unit, self.reference, self.target);
    }
}

/// Per scenario: P50, P99, max, reader CPU per 100k records, producer ns per record, drops. The
/// reference of a `batched` figure is the `immediate` one measured just after it.
fn figures(outcomes: &[Outcome], bound: &Delivery) -> Vec<Figure> {
    let mut out = Vec::new();
    let bound_us = bound.bound().as_secs_f64() * 1e6;
    for o in outcomes {
        let twin = outcomes.iter().find(|t| t.transport == o.transport && t.rate == o.rate && t.policy != o.policy);
        let reference = |f: &dyn Fn(&Outcome) -> f64, unit: &str| match twin {
            Some(t) => format!("{} {:.1} {unit}", t.policy, f(t)),
            None => "-".to_owned(),
        };
        let batched = o.policy == DeliveryPolicy::Batched;
        let key = o.key();
        let n = o.latencies.len();
        let mut push = |figure: &str, value: f64, unit: &'static str, reference: String, target: String, met: Option<bool>| {
            out.push(Figure { name: format!("delivery.{key}_{figure}"), value, unit, reference, target, met });
        };
        push("p50_us", o.pct(0.50), "us", reference(&|t| t.pct(0.5), "us"), "-".into(), None);
        let (target, met) = if batched {
            (format!("<= {bound_us:.0} us (the bound)"), Some(o.pct(0.99) <= bound_us))
        } else {
            ("measured and reported".to_owned(), None)
        };
        push("p99_us", o.pct(0.99), "us", reference(&|t| t.pct(0.99), "us"), format!("{target}; {n} records"), met);
        push("max_us", o.max_us(), "us", reference(&Outcome::max_us, "us"), "-".into(), None);
        push("reader_cpu_ms_per_100k", o.cpu_ms_per_100k(), "ms", reference(&Outcome::cpu_ms_per_100k, "ms"), "-".into(), None);
        push("producer_ns_per_record", o.producer_ns, "ns", reference(&|t| t.producer_ns, "ns"), "-".into(), None);
        let (target, met) = if batched { ("0 records".to_owned(), Some(o.dropped == 0)) } else { ("measured and reported".to_owned(), None) };
        push("drops", o.dropped as f64, "records", format!("{} emitted", o.emitted), target, met);
    }
    out
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("loader/ has a parent").to_path_buf()
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn write_outputs(outcomes: &[Outcome], figures: &[Figure], bound: &Delivery, pinned: bool) -> Result<()> {
    let date = command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
    let kernel = command_line("uname", &["-r"]);
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())))
        .unwrap_or_default();
    let nproc = command_line("nproc", &["--all"]);
    let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned();
    let pinning = if pinned {
        format!("producer pinned to CPU {PRODUCER_CPU}, reader to CPU {READER_CPU}")
    } else {
        "one CPU: producer and reader share it".to_owned()
    };
    let results = json!({
        "date": date,
        "machine": { "kernel": kernel, "cpu": cpu, "nproc": nproc, "loadavg_at_end": loadavg },
        "bound_ms": bound.bound_ms,
        "figures": figures.iter().map(|f| json!({
            "name": f.name, "value": f.value, "unit": f.unit, "reference": f.reference, "target": f.target, "met": f.met,
        })).collect::<Vec<Value>>(),
    });
    let bench_dir = target_dir().join("bench");
    fs::create_dir_all(&bench_dir).with_context(|| format!("create {}", bench_dir.display()))?;
    let json_path = bench_dir.join("delivery.json");
    fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n").with_context(|| format!("write {}", json_path.display()))?;

    let mut md = String::new();
    writeln!(md, "# Delivery latency benchmark\n")?;
    writeln!(md, "Written by `make bench` (`loader/benches/delivery.rs`); do not edit by hand. Figures also in")?;
    writeln!(md, "`target/bench/delivery.json`. The policies are described in docs/operations.md (\"Delivery latency\").\n")?;
    writeln!(md, "## Machine\n")?;
    writeln!(md, "- date: {date}")?;
    writeln!(md, "- kernel: {kernel}")?;
    writeln!(md, "- CPU: {cpu}, {nproc} CPUs ({pinning})")?;
    writeln!(md, "- load average at the end (other work on the machine): {loadavg}\n")?;
    writeln!(md, "## Method\n")?;
    writeln!(md, "- Producer: `probes/fixtures/bench_producer.bpf.c` in its one-record mode: per `BPF_PROG_TEST_RUN`")?;
    writeln!(md, "  call, one 80-byte fork record stamped with `bpf_ktime_get_ns()` and sent through the monitors'")?;
    writeln!(md, "  own `tapio_emit()`. Ring build loaded with the policy's `tapio_wakeup_bytes` (as `tapio-load run`")?;
    writeln!(md, "  loads a monitor), perf build (`-DTAPIO_PERF`) read through perf buffers opened with the policy's")?;
    writeln!(md, "  wake-up. Calls are paced to the rate (sleeping while the next call is far off, spinning the last")?;
    writeln!(md, "  200 µs). Runs: {}.", RATES.iter().map(|(r, d)| format!("{}/s for {} s", rate_name(*r), d.as_secs())).collect::<Vec<_>>().join(", "))?;
    writeln!(md, "- Reader: the run loop's own `transport::Streamer` (wake-ups and the drain timer) on a current-thread")?;
    writeln!(md, "  tokio runtime, then `events::decode` and `output::json::JsonLines` to `io::sink()`, flushed per")?;
    writeln!(md, "  batch. Latency: CLOCK_MONOTONIC after the batch's flush minus the record's kernel timestamp.")?;
    writeln!(md, "  After the last record the producer waits 3 bounds before stopping the reader, so the last")?;
    writeln!(md, "  records arrive by the timer as on a quiet node. Every emitted record must arrive, or the bench fails.")?;
    writeln!(md, "- Reader CPU: the reader thread's CPU time over the whole scenario (idle timer wake-ups included),")?;
    writeln!(md, "  per 100,000 records. Producer: wall time inside the test-run syscalls per record (the program,")?;
    writeln!(md, "  the write, and whatever the wake-up costs the producer's CPU; the syscall itself is in both).")?;
    writeln!(md, "- Drops: the object's `stats[TAPIO_STAT_LOST]`. Bound: {} ms (the default `delivery_bound_ms`).", bound.bound_ms)?;
    writeln!(md, "- Baseline: each `batched` row's `immediate` twin (a wake-up per record, no drain timer: the behaviour")?;
    writeln!(md, "  before delivery policies), measured right after it in the same run.\n")?;
    writeln!(md, "## Reading the figures\n")?;
    writeln!(md, "- `batched` at low rates: a record waits for the reader's next timer tick, up to the bound less 2 ms")?;
    writeln!(md, "  once the timer has backed off (the runtime's timer may fire up to about a millisecond late). At")?;
    writeln!(md, "  1,000/s and above the timer stays near its first interval (1 ms in practice: tokio's tick).")?;
    writeln!(md, "- `immediate`: tens of microseconds while the reader keeps up, paid for by a wake-up per record on")?;
    writeln!(md, "  the producer's CPU (producer column) and in the reader (reader CPU column).")?;
    writeln!(md, "- The development VM is shared: other work on the reader's CPU shows as P99 and max outliers and,")?;
    writeln!(md, "  on perf at 100,000/s, as drops: one CPU's 64 KiB perf buffer holds about 7 ms of these records,")?;
    writeln!(md, "  and a reader stall longer than that (see the max column) loses records under either policy.\n")?;
    writeln!(md, "## Figures\n")?;
    writeln!(md, "| transport | policy | rate/s | records | P50 µs | P99 µs | max µs | reader CPU ms / 100k | producer ns / record | drops | P99 within bound |")?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    let bound_us = bound.bound().as_secs_f64() * 1e6;
    for o in outcomes {
        let within = match o.policy {
            DeliveryPolicy::Batched if o.pct(0.99) <= bound_us => "yes",
            DeliveryPolicy::Batched => "**no**",
            DeliveryPolicy::Immediate => "-",
        };
        writeln!(
            md,
            "| {} | {} | {} ({:.0} achieved) | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {} | {within} |",
            o.transport,
            o.policy,
            o.rate,
            o.achieved,
            o.latencies.len(),
            o.pct(0.5),
            o.pct(0.99),
            o.max_us(),
            o.cpu_ms_per_100k(),
            o.producer_ns,
            o.dropped,
        )?;
    }
    writeln!(md, "\n## Missed targets\n")?;
    let missed: Vec<&Figure> = figures.iter().filter(|f| f.met == Some(false)).collect();
    if missed.is_empty() {
        writeln!(md, "None in this run.")?;
    }
    for f in missed {
        writeln!(md, "- `{}`: {:.1} {} against {}.", f.name, f.value, f.unit, f.target)?;
    }
    let md_path = workspace_root().join("docs/benchmarks-delivery.md");
    fs::write(&md_path, md).with_context(|| format!("write {}", md_path.display()))?;
    println!("bench: wrote {} and {}", md_path.display(), json_path.display());
    Ok(())
}
