//! `make bench`: the advanced monitor batched versus unbatched (issue 9 item 5): throughput,
//! CPU per event, memory and P99 kernel-to-user latency, at a controlled event rate and flat out.
//!
//! The library is driven directly (`monitors::load` with [`AdvancedOptions`]), watching one
//! syscall (`getppid`) of this process only. A generator thread makes that syscall, tagging each
//! call's first argument with its sequence number:
//!
//! - paced: [`RATE`] calls per second, each at its own deadline (`start + i / RATE`), waited for
//!   with `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)` and a 1 ns timer slack, so a late
//!   wakeup does not shift the deadlines after it;
//! - flat out: back to back for [`FLAT_OUT`].
//!
//! The main thread drains the ring the way `tapio-load` does: it blocks in `poll` on the ring's
//! fd ([`tapio_runtime::transport::EventSource::wait`]) until the kernel signals data, then decodes
//! every waiting record with `events::decode_all`. Each decoded event's latency is
//! `CLOCK_MONOTONIC` read right after its record was decoded minus the event's `ts_ns`
//! (`bpf_ktime_get_ns`, the same clock).
//!
//! CPU: `getrusage(RUSAGE_THREAD)` of the draining thread (the user-space cost of delivery) and
//! `getrusage(RUSAGE_SELF)` of the process (which also holds the generator's syscalls), each over
//! the run and divided by the events delivered; the kernel side is the `run_time_ns` of the two
//! advanced programs from `kernel.bpf_stats_enabled` (set for the run, restored after).
//! Memory: `bytes_memlock` of every BPF map this process holds (`/proc/self/fdinfo`; only the
//! monitor under test is loaded at a time) and `VmRSS`.
//!
//! Prints `BENCH <name>: <value> <unit> (reference: ..., target: ...)` lines and writes
//! `target/bench/advanced.json` and `docs/benchmarks-advanced.md`. Needs root.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tapio_decode::events::{self, Body, DecodeOptions};
use tapio_runtime::monitors::{self, advanced::{self, AdvancedOptions}, LoadOptions, LoadedMonitor};

/// The controlled rate, events per second.
const RATE: u64 = 10_000;
/// How long the paced generator runs.
const PACED: Duration = Duration::from_secs(4);
/// How long the flat-out generator runs.
const FLAT_OUT: Duration = Duration::from_secs(1);
/// Batch sizes compared: 1 is unbatched.
const BATCH_SIZES: [u32; 3] = [1, 16, 64];
/// After the generator stops, how long to wait for partial batches (flushed by the time bound
/// or when the CPU goes idle) before calling the rest lost.
const SETTLE: Duration = Duration::from_secs(2);
/// The target: P99 kernel-to-user latency at [`RATE`], unbatched.
const P99_TARGET_US: f64 = 50.0;
const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
const GETPPID: u32 = libc::SYS_getppid as u32;

/// How the generator makes its events.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Paced,
    FlatOut,
}

impl Mode {
    fn key(self) -> &'static str {
        match self {
            Self::Paced => "paced10k",
            Self::FlatOut => "flat_out",
        }
    }
}

/// What one (mode, batch size) run measured.
#[derive(Debug, Clone)]
struct Run {
    mode: Mode,
    batch: u32,
    generated: u64,
    /// The generator's achieved rate.
    generated_per_s: f64,
    delivered: u64,
    records: u64,
    /// Events the kernel counted as dropped (the ring was full), plus any never seen.
    dropped: u64,
    throughput: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    drain_cpu_ns: f64,
    process_cpu_ns: f64,
    kernel_enter_ns: f64,
    kernel_flush_ns: f64,
    /// `advanced_sys_enter` runs in the window and its mean per run (every syscall on the
    /// machine runs it; most leave at the tgid check).
    enter_runs: u64,
    enter_ns_per_run: f64,
    maps_bytes: u64,
    rss_kb: u64,
    timed_records: u64,
    /// P99 and max of how late the paced generator woke after its deadlines (us): the same
    /// scheduler delay any woken thread sees, measured in the same run.
    wake_late_p99_us: f64,
    wake_late_max_us: f64,
}

impl Run {
    fn kernel_ns(&self) -> f64 {
        self.kernel_enter_ns + self.kernel_flush_ns
    }
    fn events_per_record(&self) -> f64 {
        if self.records == 0 {
            0.0
        } else {
            self.delivered as f64 / self.records as f64
        }
    }
    fn name(&self) -> String {
        format!("advanced.{}.batch{}", self.mode.key(), self.batch)
    }
}

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP advanced: needs root (CAP_BPF, CAP_PERFMON, sysctl write)");
        return Ok(());
    }
    tapio_features::privileges::raise_memlock();
    let btf = aya::Btf::from_sys_fs().context("kernel BTF (/sys/kernel/btf/vmlinux)")?;
    let _stats = StatsSysctl::enable()?;
    let mut runs = Vec::new();
    for mode in [Mode::Paced, Mode::FlatOut] {
        for batch in BATCH_SIZES {
            let run = measure(&btf, mode, batch).with_context(|| format!("{} batch {batch}", mode.key()))?;
            println!(
                "advanced: {} batch {batch}: {} generated ({:.0}/s), {} delivered in {} records, {} dropped, p50 {:.1} us p99 {:.1} us max {:.1} us",
                mode.key(),
                run.generated,
                run.generated_per_s,
                run.delivered,
                run.records,
                run.dropped,
                run.p50_us,
                run.p99_us,
                run.max_us
            );
            runs.push(run);
        }
    }
    let lines = bench_lines(&runs);
    for l in &lines {
        println!("{l}");
    }
    write_reports(&runs, &lines)
}

/// Loads the advanced monitor with `batch`, runs the generator in `mode`, drains and measures.
fn measure(btf: &aya::Btf, mode: Mode, batch: u32) -> Result<Run> {
    let options = AdvancedOptions {
        batch_size: batch,
        syscalls: vec![GETPPID],
        target_tgid: std::process::id(),
        ..AdvancedOptions::default()
    };
    let mut m = monitors::load(&advanced::SPEC, Some(btf), &LoadOptions { advanced: options, ..Default::default() })
        .context("load the advanced monitor")?;
    let prog_stats = |m: &LoadedMonitor, name: &str| -> Result<(Duration, u64)> {
        let info = m
            .ebpf
            .program(name)
            .with_context(|| format!("program {name} missing"))?
            .info()
            .with_context(|| format!("program {name}: info"))?;
        Ok((info.run_time(), info.run_count()))
    };
    let before_stats = advanced::stats(&m.ebpf)?;
    let enter0 = prog_stats(&m, "advanced_sys_enter")?;
    let flush0 = prog_stats(&m, "advanced_flush")?;
    let self0 = rusage(libc::RUSAGE_SELF)?;
    let thread0 = rusage(libc::RUSAGE_THREAD)?;

    let done = AtomicBool::new(false);
    let mut latencies_ns: Vec<u64> = Vec::with_capacity((RATE * PACED.as_secs() * 2) as usize);
    let mut delivered = 0u64;
    let mut records = 0u64;
    let started = Instant::now();
    let mut last_decoded = started;
    let (generated, gen_elapsed, mut late_ns) = thread::scope(|s| -> Result<(u64, Duration, Vec<u64>)> {
        let generator = s.spawn(|| {
            let r = generate(mode);
            done.store(true, Ordering::Release);
            r
        });
        let mut settle_deadline: Option<Instant> = None;
        loop {
            // Block until the kernel signals data; the timeout only lets the loop notice the end.
            m.events.wait(Duration::from_millis(50)).context("poll the ring")?;
            while let Some(record) = m.events.next() {
                let decoded = events::decode_all(&record, &DecodeOptions::default()).context("decode an advanced record")?;
                let now = monotonic_ns();
                records += 1;
                for e in &decoded {
                    if !matches!(&e.body, Body::Advanced(b) if b.syscall_nr == GETPPID) {
                        continue;
                    }
                    delivered += 1;
                    latencies_ns.push(now.saturating_sub(e.ts_ns));
                }
                last_decoded = Instant::now();
            }
            if done.load(Ordering::Acquire) {
                let deadline = *settle_deadline.get_or_insert_with(|| Instant::now() + SETTLE);
                let st = advanced::stats(&m.ebpf)?;
                let accounted = delivered + (st.dropped - before_stats.dropped) + (st.sampled - before_stats.sampled);
                if accounted >= st.seen - before_stats.seen || Instant::now() >= deadline {
                    break;
                }
            }
        }
        generator.join().map_err(|_| anyhow::anyhow!("generator thread panicked"))
    })?;
    let window = last_decoded.duration_since(started).max(gen_elapsed);
    let self1 = rusage(libc::RUSAGE_SELF)?;
    let thread1 = rusage(libc::RUSAGE_THREAD)?;
    let enter1 = prog_stats(&m, "advanced_sys_enter")?;
    let flush1 = prog_stats(&m, "advanced_flush")?;
    let after_stats = advanced::stats(&m.ebpf)?;
    let maps_bytes = maps_memlock()?;
    let rss_kb = proc_status_kb("VmRSS")?;
    drop(m);

    if delivered == 0 {
        bail!("no event delivered: is the advanced monitor attached? stats {after_stats:?}");
    }
    latencies_ns.sort_unstable();
    late_ns.sort_unstable();
    let pct_of = |v: &[u64], p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i] as f64 / 1000.0
    };
    let pct = |p: f64| pct_of(&latencies_ns, p);
    let per_event = |ns: f64| ns / delivered as f64;
    let enter_runs = enter1.1 - enter0.1;
    let enter_ns = (enter1.0 - enter0.0).as_nanos() as f64;
    Ok(Run {
        mode,
        batch,
        generated,
        generated_per_s: generated as f64 / gen_elapsed.as_secs_f64(),
        delivered,
        records,
        dropped: generated.saturating_sub(delivered),
        throughput: delivered as f64 / window.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        max_us: pct(1.0),
        drain_cpu_ns: per_event((thread1 - thread0) as f64),
        process_cpu_ns: per_event((self1 - self0) as f64),
        kernel_enter_ns: per_event(enter_ns),
        kernel_flush_ns: per_event((flush1.0 - flush0.0).as_nanos() as f64),
        enter_runs,
        enter_ns_per_run: if enter_runs == 0 { 0.0 } else { enter_ns / enter_runs as f64 },
        maps_bytes,
        rss_kb,
        timed_records: after_stats.timed - before_stats.timed,
        wake_late_p99_us: pct_of(&late_ns, 0.99),
        wake_late_max_us: pct_of(&late_ns, 1.0),
    })
}

/// The generator: `getppid(seq)` per event, paced by absolute deadlines or flat out. Returns
/// how many calls it made, how long it ran and, paced, how late it woke after each deadline.
fn generate(mode: Mode) -> (u64, Duration, Vec<u64>) {
    let started = Instant::now();
    let mut n = 0u64;
    let mut late = Vec::new();
    match mode {
        Mode::FlatOut => {
            while started.elapsed() < FLAT_OUT {
                for _ in 0..256 {
                    getppid_tagged(n);
                    n += 1;
                }
            }
        }
        Mode::Paced => {
            // A 1 ns timer slack: the default 50 us would be half the 100 us period.
            // SAFETY: PR_SET_TIMERSLACK takes an integer and affects only this thread.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
            let period_ns = 1_000_000_000 / RATE;
            let total = RATE * PACED.as_secs();
            let base = monotonic_ns() + 1_000_000;
            while n < total {
                let deadline = base + n * period_ns;
                sleep_until_ns(deadline);
                late.push(monotonic_ns().saturating_sub(deadline));
                getppid_tagged(n);
                n += 1;
            }
        }
    }
    (n, started.elapsed(), late)
}

/// getppid with `tag` in the first argument register: the kernel ignores it, the tracepoint
/// reports it as arg0.
fn getppid_tagged(tag: u64) {
    // SAFETY: getppid ignores its arguments and has no side effects.
    unsafe { libc::syscall(libc::SYS_getppid, tag) };
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until `CLOCK_MONOTONIC` reaches `deadline_ns` (absolute), resuming after signals.
fn sleep_until_ns(deadline_ns: u64) {
    let ts = libc::timespec { tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t, tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long };
    // SAFETY: ts is a valid timespec; no remaining-time pointer is needed with TIMER_ABSTIME.
    while unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut()) } == libc::EINTR {}
}

/// utime + stime in nanoseconds for `who` (`RUSAGE_SELF` or `RUSAGE_THREAD`).
fn rusage(who: libc::c_int) -> Result<u64> {
    // SAFETY: rusage is plain data; getrusage writes it whole.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: r is a valid rusage to write.
    if unsafe { libc::getrusage(who, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrusage");
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    Ok(ns(r.ru_utime) + ns(r.ru_stime))
}

/// Summed `memlock` of every BPF map fd this process holds (`/proc/self/fdinfo`).
fn maps_memlock() -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir("/proc/self/fdinfo").context("read /proc/self/fdinfo")? {
        let Ok(text) = fs::read_to_string(entry?.path()) else { continue };
        if !text.lines().any(|l| l.starts_with("map_id:")) {
            continue;
        }
        total += text
            .lines()
            .find_map(|l| l.strip_prefix("memlock:")?.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

fn proc_status_kb(field: &str) -> Result<u64> {
    let text = fs::read_to_string("/proc/self/status")?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("/proc/self/status: no {field}"))
}

/// Sets `kernel.bpf_stats_enabled=1`, restoring the previous value on drop.
struct StatsSysctl(String);

impl StatsSysctl {
    fn enable() -> Result<Self> {
        let old = fs::read_to_string(STATS_SYSCTL).with_context(|| format!("{STATS_SYSCTL}: kernel.bpf_stats_enabled unavailable"))?;
        fs::write(STATS_SYSCTL, "1").with_context(|| format!("{STATS_SYSCTL}: enable BPF run-time statistics"))?;
        Ok(Self(old.trim().to_owned()))
    }
}

impl Drop for StatsSysctl {
    fn drop(&mut self) {
        if let Err(e) = fs::write(STATS_SYSCTL, &self.0) {
            eprintln!("bench: could not restore kernel.bpf_stats_enabled={}: {e}", self.0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Figures and report.

/// The `BENCH` lines: for each run its throughput, P99 latency, CPU and memory, each beside the
/// same figure of the other batch sizes in the same mode, measured in this run.
fn bench_lines(runs: &[Run]) -> Vec<String> {
    let mut out = Vec::new();
    for r in runs {
        let others = |f: &dyn Fn(&Run) -> String| -> String {
            runs.iter()
                .filter(|o| o.mode == r.mode && o.batch != r.batch)
                .map(|o| format!("batch {} {}", o.batch, f(o)))
                .collect::<Vec<_>>()
                .join(", ")
                + " in this run"
        };
        let name = r.name();
        out.push(format!(
            "BENCH {name}.throughput: {:.0} events/s (reference: {}, target: none; {} generated at {:.0}/s, {} lost, {:.1} events/record)",
            r.throughput,
            others(&|o| format!("{:.0}/s", o.throughput)),
            r.generated,
            r.generated_per_s,
            r.dropped,
            r.events_per_record()
        ));
        let target = if r.mode == Mode::Paced && r.batch == 1 {
            format!("<= {P99_TARGET_US:.0} us{}", if r.p99_us <= P99_TARGET_US { "" } else { " MISSED" })
        } else {
            "none (the target is for 10,000/s unbatched)".to_owned()
        };
        out.push(format!(
            "BENCH {name}.p99_latency: {:.1} us (reference: {}{}, target: {target}; p50 {:.1} us, p99.9 {:.1} us, max {:.1} us)",
            r.p99_us,
            others(&|o| format!("{:.1} us", o.p99_us)),
            if r.mode == Mode::Paced {
                format!("; generator's own wakeup lateness p99 {:.1} us, max {:.1} us", r.wake_late_p99_us, r.wake_late_max_us)
            } else {
                String::new()
            },
            r.p50_us,
            r.p999_us,
            r.max_us
        ));
        out.push(format!(
            "BENCH {name}.user_cpu_per_event: {:.0} ns (reference: {}, target: none; draining thread; whole process incl. generator {:.0} ns)",
            r.drain_cpu_ns,
            others(&|o| format!("{:.0} ns", o.drain_cpu_ns)),
            r.process_cpu_ns
        ));
        out.push(format!(
            "BENCH {name}.kernel_cpu_per_event: {:.0} ns (reference: {}, target: none; advanced_sys_enter {:.0} + advanced_flush {:.0} ns per delivered event, bpf_stats)",
            r.kernel_ns(),
            others(&|o| format!("{:.0} ns", o.kernel_ns())),
            r.kernel_enter_ns,
            r.kernel_flush_ns
        ));
        out.push(format!(
            "BENCH {name}.memory: {:.2} MiB (reference: {}, target: none; maps {:.2} MiB bytes_memlock + RSS {:.2} MiB)",
            (r.maps_bytes as f64 + r.rss_kb as f64 * 1024.0) / 1048576.0,
            others(&|o| format!("{:.2} MiB", (o.maps_bytes as f64 + o.rss_kb as f64 * 1024.0) / 1048576.0)),
            r.maps_bytes as f64 / 1048576.0,
            r.rss_kb as f64 / 1024.0
        ));
    }
    out
}

fn write_reports(runs: &[Run], lines: &[String]) -> Result<()> {
    let results = json!({
        "date": now_utc(),
        "machine": machine(),
        "rate_per_s": RATE,
        "paced_s": PACED.as_secs_f64(),
        "flat_out_s": FLAT_OUT.as_secs_f64(),
        "p99_target_us": P99_TARGET_US,
        "runs": runs.iter().map(|r| json!({
            "name": r.name(),
            "mode": r.mode.key(),
            "batch_size": r.batch,
            "generated": r.generated,
            "generated_per_s": r.generated_per_s,
            "delivered": r.delivered,
            "records": r.records,
            "events_per_record": r.events_per_record(),
            "records_flushed_by_time_or_idle": r.timed_records,
            "lost": r.dropped,
            "throughput_events_per_s": r.throughput,
            "latency_us": { "p50": r.p50_us, "p99": r.p99_us, "p999": r.p999_us, "max": r.max_us },
            "p99_target_met": (r.mode == Mode::Paced && r.batch == 1).then_some(r.p99_us <= P99_TARGET_US),
            "generator_wakeup_late_us": (r.mode == Mode::Paced).then_some(json!({ "p99": r.wake_late_p99_us, "max": r.wake_late_max_us })),
            "user_cpu_ns_per_event": { "drain_thread": r.drain_cpu_ns, "process": r.process_cpu_ns },
            "kernel_ns_per_event": { "advanced_sys_enter": r.kernel_enter_ns, "advanced_flush": r.kernel_flush_ns, "total": r.kernel_ns() },
            "advanced_sys_enter_runs": r.enter_runs,
            "advanced_sys_enter_ns_per_run": r.enter_ns_per_run,
            "maps_bytes_memlock": r.maps_bytes,
            "rss_kb": r.rss_kb,
        })).collect::<Vec<_>>(),
        "bench_lines": lines,
    });
    let root = workspace_root();
    let bench_dir = target_dir().join("bench");
    fs::create_dir_all(&bench_dir).with_context(|| format!("create {}", bench_dir.display()))?;
    let json_path = bench_dir.join("advanced.json");
    fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n").with_context(|| format!("write {}", json_path.display()))?;
    let doc = root.join("docs/benchmarks-advanced.md");
    fs::write(&doc, markdown(&results, runs)).with_context(|| format!("write {}", doc.display()))?;
    println!("advanced: wrote {} and {}", doc.display(), json_path.display());
    Ok(())
}

fn markdown(results: &Value, runs: &[Run]) -> String {
    let m = &results["machine"];
    let mut s = String::new();
    let _ = writeln!(s, "# Advanced monitor: batched versus unbatched\n");
    let _ = writeln!(
        s,
        "Written by `make bench` (`loader/benches/advanced.rs`); do not edit by hand. The same \
         figures are in `target/bench/advanced.json`.\n"
    );
    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "- date: {}", results["date"].as_str().unwrap_or(""));
    let _ = writeln!(s, "- kernel: {}", m["kernel"].as_str().unwrap_or(""));
    let _ = writeln!(s, "- CPUs (`nproc`): {}", m["nproc"].as_str().unwrap_or(""));
    let _ = writeln!(s, "- CPU: {}", m["cpu"].as_str().unwrap_or(""));
    let _ = writeln!(s, "- load average at the end (other work on the machine): {}\n", m["loadavg_at_end"].as_str().unwrap_or(""));
    let _ = writeln!(s, "## Method\n");
    let _ = writeln!(
        s,
        "- The advanced monitor loaded through the library (`monitors::load`, `AdvancedOptions` \
         with the batch size under test, the default 100 ms flush bound, no dedup, no sampling), \
         watching `getppid` of this process only, on the object's default ring buffer (256 KiB).\n\
         - Generator thread: `getppid(seq)`; paced at {RATE}/s for {:?}, each call at its own \
         absolute deadline (`clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`, timer slack 1 ns); \
         flat out: back to back for {:?}.\n\
         - Drain: the main thread blocks in `poll` on the ring fd (`EventSource::wait`), then \
         decodes every waiting record with `events::decode_all`, as `tapio-load` does.\n\
         - Latency: `CLOCK_MONOTONIC` right after a record is decoded minus each of its events' \
         `ts_ns` (`bpf_ktime_get_ns`, the same clock). Percentiles over every delivered event.\n\
         - Throughput: events delivered divided by the time from the generator's start to the \
         last decoded record (or the generator's run time if longer).\n\
         - CPU: `getrusage(RUSAGE_THREAD)` of the draining thread and `getrusage(RUSAGE_SELF)` \
         of the process (generator included: its syscalls and the BPF program run in its \
         context), utime + stime over the run, per delivered event. Kernel: `run_time_ns` of \
         `advanced_sys_enter` and `advanced_flush` (`kernel.bpf_stats_enabled=1` for the run), \
         per delivered event. `advanced_sys_enter` runs on every syscall of every process on \
         the machine and `advanced_flush` on every task switch, so this also carries the \
         early-outs for all other work in the window (their run count is in the JSON).\n\
         - Memory: `memlock` of every BPF map fd the process holds (only the monitor under \
         test) plus `VmRSS`, at the end of each run.\n",
        PACED, FLAT_OUT
    );
    let _ = writeln!(s, "## Figures\n");
    let _ = writeln!(
        s,
        "| mode | batch | generated | delivered | lost | events/record | throughput (events/s) | p50 (us) | p99 (us) | p99.9 (us) | max (us) | drain CPU (ns/event) | process CPU (ns/event) | kernel (ns/event) | maps (MiB) | RSS (MiB) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
            r.mode.key(),
            r.batch,
            r.generated,
            r.delivered,
            r.dropped,
            r.events_per_record(),
            r.throughput,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.max_us,
            r.drain_cpu_ns,
            r.process_cpu_ns,
            r.kernel_ns(),
            r.maps_bytes as f64 / 1048576.0,
            r.rss_kb as f64 / 1024.0
        );
    }
    let _ = writeln!(s, "\n## Target\n");
    match runs.iter().find(|r| r.mode == Mode::Paced && r.batch == 1) {
        Some(r) if r.p99_us <= P99_TARGET_US => {
            let _ = writeln!(s, "P99 kernel-to-user latency at {RATE}/s unbatched: {:.1} us, target <= {P99_TARGET_US:.0} us: met.", r.p99_us);
        }
        Some(r) => {
            let _ = writeln!(
                s,
                "P99 kernel-to-user latency at {RATE}/s unbatched: {:.1} us, target <= {P99_TARGET_US:.0} us: **missed** by {:.1} us \
                 ({:.1}x). The median is {:.1} us, so the typical path (ring commit, wakeup, poll \
                 return, decode) fits; the tail is the draining thread not running when the \
                 wakeup arrives: on {} CPUs shared with the generator and whatever else the machine \
                 runs (load average above), a woken thread waits for the scheduler. Measured in the \
                 same run, the generator thread itself woke from its absolute-deadline sleeps \
                 {:.1} us late at P99 (max {:.1} us), with no BPF or ring in that path: compare it \
                 with the latency tail above. The bound is scheduling on a loaded machine, not the \
                 monitor; a dedicated core or a real-time priority for the drain thread is what \
                 would move it (not tried here: it would measure a different deployment).",
                r.p99_us,
                r.p99_us - P99_TARGET_US,
                r.p99_us / P99_TARGET_US,
                r.p50_us,
                m["nproc"].as_str().unwrap_or("?"),
                r.wake_late_p99_us,
                r.wake_late_max_us
            );
        }
        None => {
            let _ = writeln!(s, "Not measured.");
        }
    }
    let _ = writeln!(s, "\n## Reading the batched rows\n");
    let _ = writeln!(
        s,
        "A batch leaves when it is full, when its oldest event is older than the flush bound, or \
         when its CPU switches to idle (`advanced_flush` on `sched_switch`). A paced generator \
         sleeps between events, so its CPU often goes idle after each one and the batch leaves \
         early: the events-per-record column shows how much batching actually happened. Flat \
         out, batches fill, and the latency of a batched event includes the time its batch took \
         to fill."
    );
    s
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("loader/ has a parent").to_path_buf()
}

/// The cargo target directory: this bench runs from `<target>/release/deps/`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program).args(args).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

fn now_utc() -> String {
    command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
}

fn machine() -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())))
        .unwrap_or_default();
    json!({
        "nproc": command_line("nproc", &[]),
        "kernel": command_line("uname", &["-r"]),
        "cpu": cpu,
        "loadavg_at_end": fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned(),
    })
}
