//! advanced/flood_dedup: a deterministic flood with duplicates, and sampling at set rates, from
//! a flooder process (the agent re-executed as `advanced-flood`) that the advanced monitor is
//! pointed at alone through the loader's own API ([`advanced::apply`]); the agent's options are
//! put back afterwards.
//!
//! The flooder's syscalls fail harmlessly (EBADF on fd numbers far above any open one) and carry
//! their tag in the first argument, which is part of the dedup identity (thread, syscall, arg0):
//! 1. Dedup: IDENTITIES closes, each repeated REPEATS times within the window: one event each,
//!    and IDENTITIES * (REPEATS - 1) suppressed.
//! 2. After the window: each identity once more, one event each carrying `suppressed` =
//!    REPEATS - 1, what the last window collapsed.
//! 3. Sampling at rate 0 (write): WRITES calls, no event, every one counted as sampled.
//! 4. Sampling at READ_RATE (read, distinct arguments so no dedup): the probe's sampler draws
//!    bpf_get_prandom_u32, so the kept count is binomial; it must fall within a bound (see
//!    READ_KEPT), and agree exactly with the `sampled` counter.
//!
//! Phases 1 and 2 are deterministic and form the snapshot, without the CPU and the record size,
//! which depend on scheduling (both are checked). The statistics are per-CPU sums, read once the
//! batches other processes left under the agent's options are flushed (see [`empty_batches`]);
//! from then on the monitor counts the flooder alone, so every counter's delta is exact.

use std::{
    collections::BTreeMap,
    io::Read,
    ops::RangeInclusive,
    process::{Child, Command, ExitCode, Stdio},
    time::Duration,
};

use serde_json::Value;
use tapio_decode::events::{Body, Event};
use tapio_runtime::monitors::{advanced::{self, AdvancedOptions, AdvancedStats}, LoadOptions, LoadedMonitor};
use tapio_testkit::snapshot::Roles;

use super::{check, collect, current_exe, discard, lost, monitor, snapshot, EVENT_WAIT};
use crate::Outcome;

const SCENARIO: &str = "flood_dedup";
const IDENTITIES: u64 = 8;
const REPEATS: u64 = 64;
const WRITES: u64 = 64;
const READS: u64 = 1024;
/// First fd numbers of each phase's tags: far above any open fd, and apart from each other.
const CLOSE_BASE: u64 = 910_000;
const WRITE_BASE: u64 = 920_000;
const READ_BASE: u64 = 930_000;
const READ_RATE: f64 = 0.25;
/// Kept reads at READ_RATE: binomial(1024, 0.25), mean 256 and standard deviation 13.9. The
/// bound is the mean +- 6 standard deviations (83): a correct sampler falls outside it about
/// once in 5 * 10^8 runs, while a sampler that ignores the rate (1024 or 0 kept) or applies its
/// complement (768) is far outside.
const READ_KEPT: RangeInclusive<u64> = 173..=339;
/// The dedup window: each identity's REPEATS calls take well under a millisecond, even under
/// TCG; the flooder exits with TOO_SLOW if one took longer than this.
const WINDOW: Duration = Duration::from_millis(250);
const BATCH: u32 = 8;
const FLUSH: Duration = Duration::from_millis(20);
/// The flooder gives up (SIGALRM) after this many seconds.
const ALARM_SECS: u32 = 10;
/// The flooder's exit code when a phase-1 identity outlasted the window.
const TOO_SLOW: i32 = 3;

fn monotonic() -> Duration {
    Duration::from_nanos(tapio_decode::dns::monotonic_ns())
}

/// One syscall with an fd that is not open; the result (EBADF) is not needed.
fn bad_fd(nr: libc::c_long, fd: u64) {
    // SAFETY: close, read and write of an fd that is not open touch no memory and fail EBADF.
    unsafe { libc::syscall(nr, fd as libc::c_long, std::ptr::null_mut::<libc::c_void>(), 0 as libc::c_long) };
}

/// The flooder: says `ready` on stdout, waits for its stdin to close, floods, exits. After the
/// word it makes no syscall the monitor watches other than the flood's own (poll, nanosleep and
/// exit_group are not watched), so the counters hold nothing else.
pub fn flooder() -> ExitCode {
    // SAFETY: alarm has no preconditions; write of a static buffer; poll on one pollfd.
    unsafe {
        libc::alarm(ALARM_SECS);
        let word = b"ready\n";
        libc::write(1, word.as_ptr().cast(), word.len());
        let mut go = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
        libc::poll(&mut go, 1, -1);
    }
    let mut slow = false;
    for i in 0..IDENTITIES {
        let started = monotonic();
        for _ in 0..REPEATS {
            bad_fd(libc::SYS_close, CLOSE_BASE + i);
        }
        slow |= monotonic() - started >= WINDOW;
    }
    // Every identity's window started before now: once it has run out, the next call of each
    // opens a new window and reports what the last one suppressed.
    let until = monotonic() + WINDOW + Duration::from_millis(1);
    let ts = libc::timespec { tv_sec: until.as_secs() as _, tv_nsec: until.subsec_nanos() as _ };
    // SAFETY: ts is a valid timespec; an absolute sleep restarted on EINTR.
    while unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut()) } == libc::EINTR {}
    for i in 0..IDENTITIES {
        bad_fd(libc::SYS_close, CLOSE_BASE + i);
    }
    for i in 0..WRITES {
        bad_fd(libc::SYS_write, WRITE_BASE + i);
    }
    for i in 0..READS {
        bad_fd(libc::SYS_read, READ_BASE + i);
    }
    // SAFETY: _exit skips the runtime's stdout flush, a write the counters would see.
    unsafe { libc::_exit(if slow { TOO_SLOW } else { 0 }) }
}

/// Spawns the flooder and waits for its word.
fn spawn_flooder() -> Result<Child, String> {
    let mut child = Command::new(current_exe())
        .arg("advanced-flood")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn the flooder: {e}"))?;
    let mut word = [0u8; 6];
    // Bounded: the flooder's alarm ends it, and its end closes the pipe.
    let read = child.stdout.as_mut().map(|s| s.read_exact(&mut word));
    if !matches!(read, Some(Ok(()))) || &word != b"ready\n" {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("the flooder did not say ready: {read:?}"));
    }
    Ok(child)
}

/// Waits until no CPU holds a partial batch from before [`advanced::apply`] (other processes'
/// events, batched under the agent's options), so each record the flood fills holds the
/// flooder's events alone; returns the counters then. The leftovers leave by the time bound on
/// their CPU's next task switch; each one's record wakes the ring.
fn empty_batches(m: &mut LoadedMonitor) -> Result<AdvancedStats, String> {
    let deadline = std::time::Instant::now() + EVENT_WAIT;
    loop {
        discard(m);
        let s = advanced::stats(&m.ebpf).map_err(|e| e.to_string())?;
        if s.buffered == 0 {
            return Ok(s);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("{} events of other processes still batched {EVENT_WAIT:?} after the reconfiguration", s.buffered));
        }
        m.events.wait(left).map_err(|e| format!("wait for the leftover batches: {e}"))?;
    }
}

fn delta(after: &AdvancedStats, before: &AdvancedStats) -> AdvancedStats {
    AdvancedStats {
        seen: after.seen - before.seen,
        sent: after.sent - before.sent,
        sampled: after.sampled - before.sampled,
        deduped: after.deduped - before.deduped,
        dropped: after.dropped - before.dropped,
        filtered: after.filtered - before.filtered,
        records: after.records - before.records,
        timed: after.timed - before.timed,
        buffered: after.buffered,
    }
}

fn body(e: &Event) -> Option<&tapio_decode::events::advanced::AdvancedBody> {
    match &e.body {
        Body::Advanced(b) => Some(b),
        _ => None,
    }
}

pub fn run(out: &mut Outcome, loaded: &mut [LoadedMonitor]) {
    let name = |what: &str| format!("advanced.{SCENARIO}.{what}");
    let Some(m) = monitor(out, loaded, "advanced", &format!("advanced.{SCENARIO}")) else { return };
    discard(m);
    let lost_before = lost(m);
    let mut child = match spawn_flooder() {
        Ok(c) => c,
        Err(e) => return check(out, &name("flooder"), false, e),
    };
    let flooder = child.id();
    let options = AdvancedOptions {
        batch_size: BATCH,
        flush_interval: FLUSH,
        dedup_window: WINDOW,
        rates: BTreeMap::from([(libc::SYS_write as u32, 0.0), (libc::SYS_read as u32, READ_RATE)]),
        target_tgid: flooder,
        ..LoadOptions::default().advanced
    };
    let before = advanced::apply(&m.ebpf, &options).map_err(|e| e.to_string()).and_then(|()| empty_batches(m));
    match before {
        Ok(before) => flood(out, m, child, &before, lost_before),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            check(out, &name("configure"), false, e);
        }
    }
    // Whatever happened, the agent's own options come back for whoever runs next.
    let restored = advanced::apply(&m.ebpf, &LoadOptions::default().advanced);
    check(out, &name("restore"), restored.is_ok(), format!("the agent's options back: {restored:?}"));
}

/// Starts the flood, checks what it gave, and sends the snapshot.
fn flood(out: &mut Outcome, m: &mut LoadedMonitor, mut child: Child, before: &AdvancedStats, lost_before: u64) {
    let name = |what: &str| format!("advanced.{SCENARIO}.{what}");
    let flooder = child.id();
    drop(child.stdin.take()); // the go
    let status = child.wait();
    let after = advanced::stats(&m.ebpf);
    let code = status.as_ref().ok().and_then(|s| s.code());
    let detail = match code {
        Some(TOO_SLOW) => format!("an identity's {REPEATS} calls outlasted the {WINDOW:?} window: the dedup counts cannot be exact"),
        _ => format!("flooder exit {status:?}"),
    };
    check(out, &name("flooder"), code == Some(0), detail);
    let d = match after {
        Ok(a) => delta(&a, before),
        Err(e) => return check(out, &name("stats"), false, e.to_string()),
    };

    // sampled = WRITES + the reads sampled out; every other flooder event is sent, in the end.
    let kept_reads = READS.saturating_sub(d.sampled.saturating_sub(WRITES));
    let expected = 2 * IDENTITIES + kept_reads;
    let ours = |e: &Event| e.tgid == flooder && body(e).is_some_and(|b| b.arg0 >= CLOSE_BASE);
    let c = collect(m, ours, |got| got.len() as u64 >= expected, EVENT_WAIT);
    let dropped = lost(m) - lost_before;
    check(
        out,
        &name("decode"),
        c.errors.is_empty() && dropped == 0 && d.dropped == 0,
        format!("{} events, {dropped} records lost, {} events dropped by the probe, errors: {:?}", c.events.len(), d.dropped, c.errors),
    );

    let of = |nr: libc::c_long| c.events.iter().filter(|e| body(e).is_some_and(|b| i64::from(b.syscall_nr) == nr)).collect::<Vec<_>>();
    let (closes, writes, reads) = (of(libc::SYS_close), of(libc::SYS_write), of(libc::SYS_read));
    let close_events = |suppressed: u64| {
        (0..IDENTITIES).all(|i| {
            closes.iter().filter(|e| body(e).is_some_and(|b| b.arg0 == CLOSE_BASE + i && u64::from(b.suppressed) == suppressed)).count() == 1
        })
    };
    check(
        out,
        &name("dedup"),
        d.deduped == IDENTITIES * (REPEATS - 1) && closes.len() as u64 == 2 * IDENTITIES && close_events(0),
        format!(
            "{IDENTITIES} identities x {REPEATS}: {} close events, deduped {} (want {} events with suppressed 0, {} deduped)",
            closes.len(),
            d.deduped,
            IDENTITIES,
            IDENTITIES * (REPEATS - 1)
        ),
    );
    check(
        out,
        &name("dedup_next_window"),
        close_events(REPEATS - 1),
        format!("each identity once more after the window: one event each with suppressed {}", REPEATS - 1),
    );
    check(out, &name("sampling_rate_0"), writes.is_empty(), format!("{WRITES} writes at rate 0: {} events", writes.len()));
    let distinct: std::collections::BTreeSet<u64> = reads.iter().filter_map(|e| body(e).map(|b| b.arg0)).collect();
    let reads_ok = reads.len() as u64 == kept_reads
        && distinct.len() == reads.len()
        && distinct.iter().all(|a| (READ_BASE..READ_BASE + READS).contains(a))
        && reads.iter().all(|e| body(e).is_some_and(|b| b.suppressed == 0));
    check(
        out,
        &name("sampling_rate"),
        reads_ok && READ_KEPT.contains(&kept_reads),
        format!(
            "{READS} reads at rate {READ_RATE}: {} events, {kept_reads} kept by the sampled counter ({} sampled in all), bound {READ_KEPT:?}",
            reads.len(),
            d.sampled
        ),
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let batching = c.events.iter().filter_map(body).all(|b| (1..=BATCH).contains(&b.batch_count) && u64::from(b.cpu) < cpus && b.numa_node == 0);
    check(out, &name("batching"), batching, format!("every event in a record of 1..={BATCH}, on one of {cpus} CPUs, NUMA node 0"));
    // The flooder's calls, every one past the pre-filter; all of them accounted for.
    let calls = IDENTITIES * REPEATS + IDENTITIES + WRITES + READS;
    let end = advanced::stats(&m.ebpf).map(|s| delta(&s, before));
    let added_up = end.as_ref().is_ok_and(|e| {
        e.seen == calls && e.sent == expected && e.buffered == 0 && e.seen == e.sent + e.sampled + e.deduped + e.dropped
    });
    check(out, &name("stats_add_up"), added_up, format!("{end:?}: want seen {calls}, sent {expected}, nothing buffered"));

    // The deterministic part: phases 1 and 2, without what scheduling decides.
    let values: Vec<Value> = closes
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).expect("events serialize");
            if let Some(obj) = v.as_object_mut() {
                obj.remove("cpu");
                obj.remove("batch_count");
            }
            v
        })
        .collect();
    let roles = Roles { pids: vec![(u64::from(flooder), "flooder".to_owned())], exe: current_exe(), ports: Vec::new(), cgroups: crate::own_cgroups() };
    snapshot(out, "advanced", SCENARIO, &values, &roles);
}
