//! The Prometheus endpoint: `/metrics` in the text exposition format and `/healthz`.
//!
//! A hand-written HTTP/1.0 responder on a tokio `TcpListener`: the endpoint serves two fixed
//! paths to a scraper and a kubelet probe, so a web framework would add dependencies and attack
//! surface for nothing. Values are read at scrape time from the kernel (program statistics,
//! the per-CPU `stats` map of each object) and from [`Counters`] the run loop updates, so a
//! scrape never waits on the event path.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use aya::Ebpf;
use thiserror::Error;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tracing::{debug, warn};

use crate::monitors::{self, AttachReport};

/// Where to serve, and whether failing to is fatal.
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    pub address: SocketAddr,
    /// Set when the address was configured explicitly: an operator who asked for an endpoint
    /// must not get a loader silently running without one. The default address only warns, so
    /// two loaders on one host (tests, a debugging session) do not fight over the port.
    pub required: bool,
}

/// Why the endpoint could not start.
#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("metrics {address}: bind: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Counters kept in user space, updated by the run loop.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events the first sink wrote (crate::output::sink::Fanout).
    pub events_written: AtomicU64,
    /// Events the first sink dropped because its queue was full (crate::output::sink).
    pub output_dropped: AtomicU64,
    /// Events waiting in the first sink's queue now, and the queue's bound.
    pub output_queue_events: AtomicU64,
    pub output_queue_bound: AtomicU64,
    pub decode_errors: AtomicU64,
    pub config_reloads: AtomicU64,
    pub config_reload_errors: AtomicU64,
    /// Every sink's own counters, in configuration order (`tapio_sink_*`).
    pub sinks: std::sync::Mutex<Vec<Arc<crate::output::sink::SinkCounters>>>,
    // --- dns correlator (crate::dns::Correlator), stored by the run loop after each batch ---
    /// Queries waiting for their response now.
    pub dns_inflight: AtomicU64,
    /// Queries dropped unanswered because the table was full (the oldest go first).
    pub dns_inflight_evicted: AtomicU64,
    /// The table's bound, so an alert can compare the gauge with it.
    pub dns_inflight_capacity: AtomicU64,
    // --- end dns correlator ---
    /// The CRI name lookups' counters, once the run has a socket to ask (tapio-cri).
    pub cri: std::sync::OnceLock<std::sync::Arc<tapio_cri::Stats>>,
}

/// The DNS correlator publishes its table here (tapio-decode's `dns::Correlator::publish`).
impl crate::dns::DnsGauges for Counters {
    fn set_dns_inflight(&self, inflight: u64, capacity: u64, evicted: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.dns_inflight.store(inflight, Relaxed);
        self.dns_inflight_capacity.store(capacity, Relaxed);
        self.dns_inflight_evicted.store(evicted, Relaxed);
    }
}

/// The loaded objects, shared read-only between the run loop and the endpoint. The run loop
/// stops the endpoint before dropping its handle, so the last reference detaches everything.
pub type SharedObjects = Arc<Vec<(&'static str, Ebpf)>>;

/// What a scrape reads.
pub struct State {
    pub objects: SharedObjects,
    /// Every program that was attached, with its path.
    pub attached: Vec<AttachReport>,
    /// Programs owed on this kernel: those attached at start, loaded or adopted from pins.
    pub planned: usize,
    /// The monitors asked for, in order.
    pub requested: Vec<&'static str>,
    /// The monitors asked for that are not running, with the kernel's reason (crate::run).
    pub failed: Vec<crate::monitors::MonitorFailure>,
    pub counters: Arc<Counters>,
    /// The agent's drops per source filter (crate::filter).
    pub filter_drops: Arc<crate::filter::AgentDrops>,
    pub kernel_release: String,
    /// Programs adopted from `--pin-path` pins instead of loaded (see crate::pin): no object
    /// holds them, so they are read through their pins.
    pub pinned: Vec<crate::pin::PinnedProgram>,
}

/// Binds the listener; None when the default address is busy (see [`MetricsOptions::required`]).
pub async fn bind(options: &MetricsOptions) -> Result<Option<TcpListener>, MetricsError> {
    match TcpListener::bind(options.address).await {
        Ok(listener) => Ok(Some(listener)),
        Err(source) if !options.required => {
            warn!(address = %options.address, "metrics endpoint disabled: bind: {source}");
            Ok(None)
        }
        Err(source) => Err(MetricsError::Bind { address: options.address, source }),
    }
}

/// Serves until the task is aborted; each connection is answered on its own task.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &state).await {
                        debug!(%peer, "metrics: {e}");
                    }
                });
            }
            Err(e) => {
                // EMFILE and friends: back off rather than spin.
                warn!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request head (bounded in size and time) and writes one response.
async fn answer(mut stream: TcpStream, state: &State) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() + n > 8192 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read_head)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(state)),
        ("GET" | "HEAD", "/healthz") => match health(state) {
            (true, body) => ("200 OK", "text/plain; charset=utf-8", body),
            (false, body) => ("503 Service Unavailable", "text/plain; charset=utf-8", body),
        },
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain; charset=utf-8", "try /metrics or /healthz\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "GET only\n".to_owned()),
    };
    let mut response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// The `/healthz` answer: healthy (200) or not (503), and the body.
///
/// Unhealthy when nothing runs, or when a program attached at start is gone (unloaded, or its
/// pin removed). A monitor that failed at start does not make the loader unhealthy while others
/// run, since restarting would not change the kernel's answer: the body says `degraded` and
/// gives each failure with its reason.
pub fn health(state: &State) -> (bool, String) {
    let failures: String = state.failed.iter().map(|f| format!("{}\n", f.reason)).collect();
    let running = state.attached.len() + state.pinned.len();
    if running == 0 {
        return (false, format!("no program running\n{failures}"));
    }
    if let Some(p) = state.pinned.iter().find(|p| !p.attached()) {
        return (false, format!("monitor {}: program {}: pinned link or program gone\n", p.monitor, p.program));
    }
    for r in &state.attached {
        let loaded = object(state, r.monitor).and_then(|ebpf| ebpf.program(r.program)).is_some_and(|p| p.info().is_ok());
        if !loaded {
            return (false, format!("monitor {}: program {}: not loaded\n", r.monitor, r.program));
        }
    }
    if state.failed.is_empty() {
        return (true, format!("ok: {running} of {} planned programs attached\n", state.planned));
    }
    let names: Vec<&str> = state.failed.iter().map(|f| f.monitor).collect();
    (
        true,
        format!(
            "ok: degraded: {} of {} monitors not running ({}); {running} of {} planned programs attached\n{failures}",
            state.failed.len(),
            state.requested.len(),
            names.join(", "),
            state.planned
        ),
    )
}

fn object<'a>(state: &'a State, monitor: &str) -> Option<&'a Ebpf> {
    state.objects.iter().find(|(name, _)| *name == monitor).map(|(_, ebpf)| ebpf)
}

/// Longest `reason` label of `tapio_monitor_failed`, in characters (the log has the whole text).
const REASON_MAX: usize = 240;

/// The `monitor` and `program` labels of a program's samples.
struct Labels<'a> {
    monitor: &'a str,
    program: &'a str,
}

/// Escapes a label value as the exposition format requires.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes a family header; samples follow.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Whether the kernel is counting program runs (`kernel.bpf_stats_enabled`, 5.1+).
fn bpf_stats_enabled() -> Option<bool> {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").ok().map(|s| s.trim() == "1")
}

/// The metrics page. Every family is written even when empty of samples, so dashboards see
/// the names.
pub fn render(state: &State) -> String {
    let mut out = String::with_capacity(4096);
    family(&mut out, "tapio_build_info", "gauge", "Version of this tapio-load; always 1.");
    let _ = writeln!(out, "tapio_build_info{{version=\"{}\"}} 1", label(env!("CARGO_PKG_VERSION")));
    family(&mut out, "tapio_kernel_info", "gauge", "Release of the running kernel; always 1.");
    let _ = writeln!(out, "tapio_kernel_info{{release=\"{}\"}} 1", label(&state.kernel_release));

    family(&mut out, "tapio_bpf_stats_enabled", "gauge", "1 when kernel.bpf_stats_enabled=1, without which program run counts and times stay 0.");
    let _ = writeln!(out, "tapio_bpf_stats_enabled {}", u8::from(bpf_stats_enabled().unwrap_or(false)));

    family(&mut out, "tapio_programs_planned", "gauge", "Programs planned for this kernel: those attached at start, loaded or adopted from pins (alternatives not taken and programs the kernel cannot run are not counted).");
    let _ = writeln!(out, "tapio_programs_planned {}", state.planned);
    family(&mut out, "tapio_monitors_requested", "gauge", "Monitors the configuration asks for.");
    let _ = writeln!(out, "tapio_monitors_requested {}", state.requested.len());
    family(&mut out, "tapio_monitor_running", "gauge", "1 when the requested monitor loaded (or was adopted from pins) and runs, 0 when it failed at start.");
    for m in &state.requested {
        let failed = state.failed.iter().any(|f| f.monitor == *m);
        let _ = writeln!(out, "tapio_monitor_running{{monitor=\"{}\"}} {}", label(m), u8::from(!failed));
    }
    family(&mut out, "tapio_monitor_failed", "gauge", "1 for a requested monitor that failed at start; `errno` is the kernel's answer (0: none), `reason` the error's first line.");
    for f in &state.failed {
        let reason: String = f.reason.lines().next().unwrap_or("").chars().take(REASON_MAX).collect();
        let _ = writeln!(
            out,
            "tapio_monitor_failed{{monitor=\"{}\",errno=\"{}\",reason=\"{}\"}} 1",
            label(f.monitor),
            f.errno.unwrap_or(0),
            label(&reason)
        );
    }
    // The security monitor's in_container reference (crate::monitors::security::initial_mount_ns).
    if state.requested.contains(&monitors::security::SPEC.name) {
        family(&mut out, "tapio_mount_ns_reference", "gauge", "The initial mount namespace's inode number that in_container compares with, and where it came from; absent when unreadable (in_container then follows the pid namespace alone).");
        if let Ok((inum, from)) = monitors::security::initial_mount_ns() {
            let _ = writeln!(out, "tapio_mount_ns_reference{{source=\"{}\"}} {inum}", label(from));
        }
    }
    family(&mut out, "tapio_program_attached", "gauge", "1 when the program is attached at the labelled path.");
    for r in &state.attached {
        let loaded = object(state, r.monitor).and_then(|e| e.program(r.program)).is_some_and(|p| p.info().is_ok());
        let _ = writeln!(
            out,
            "tapio_program_attached{{monitor=\"{}\",program=\"{}\",path=\"{}\"}} {}",
            label(r.monitor),
            label(r.program),
            label(&r.path),
            u8::from(loaded)
        );
    }

    for p in &state.pinned {
        let _ = writeln!(
            out,
            "tapio_program_attached{{monitor=\"{}\",program=\"{}\",path=\"pinned:{}\"}} {}",
            label(p.monitor),
            label(&p.program),
            label(&p.link.display().to_string()),
            u8::from(p.attached())
        );
    }

    let infos: Vec<_> = state
        .attached
        .iter()
        .filter_map(|r| {
            let info = object(state, r.monitor)?.program(r.program)?.info().ok()?;
            Some((Labels { monitor: r.monitor, program: r.program }, info))
        })
        .chain(state.pinned.iter().filter_map(|p| Some((Labels { monitor: p.monitor, program: &p.program }, p.info()?))))
        .collect();
    family(&mut out, "tapio_program_id", "gauge", "The kernel's id of the program (unchanged across a SIGHUP reload).");
    for (r, info) in &infos {
        let _ = writeln!(out, "tapio_program_id{{monitor=\"{}\",program=\"{}\"}} {}", label(r.monitor), label(r.program), info.id());
    }
    family(&mut out, "tapio_program_runs_total", "counter", "Times the kernel ran the program (needs kernel.bpf_stats_enabled=1).");
    for (r, info) in &infos {
        let _ = writeln!(out, "tapio_program_runs_total{{monitor=\"{}\",program=\"{}\"}} {}", label(r.monitor), label(r.program), info.run_count());
    }
    family(&mut out, "tapio_program_run_seconds_total", "counter", "Time the kernel spent running the program (needs kernel.bpf_stats_enabled=1).");
    for (r, info) in &infos {
        let _ = writeln!(
            out,
            "tapio_program_run_seconds_total{{monitor=\"{}\",program=\"{}\"}} {}",
            label(r.monitor),
            label(r.program),
            info.run_time().as_secs_f64()
        );
    }

    family(&mut out, "tapio_events_emitted_total", "counter", "Events the monitor's programs put into their buffer (kernel stats map).");
    for (name, ebpf) in state.objects.iter() {
        let _ = writeln!(out, "tapio_events_emitted_total{{monitor=\"{}\"}} {}", label(name), monitors::stat(ebpf, 0).unwrap_or(0));
    }
    family(&mut out, "tapio_filter_dropped_total", "counter", "Events a source filter dropped, by filter and where: `kernel` (before the buffer, per monitor) or `agent` (after decoding).");
    for (name, ebpf) in state.objects.iter().filter(|(_, e)| tapio_runtime::filter::carried(e)) {
        for (filter, n) in tapio_runtime::filter::drops(ebpf) {
            let _ = writeln!(out, "tapio_filter_dropped_total{{filter=\"{filter}\",where=\"kernel\",monitor=\"{}\"}} {n}", label(name));
        }
    }
    for (filter, n) in state.filter_drops.iter() {
        let _ = writeln!(out, "tapio_filter_dropped_total{{filter=\"{filter}\",where=\"agent\"}} {n}");
    }
    family(&mut out, "tapio_events_lost_total", "counter", "Events dropped in the kernel because the buffer was full or the perf output failed.");
    for (name, ebpf) in state.objects.iter() {
        let _ = writeln!(out, "tapio_events_lost_total{{monitor=\"{}\"}} {}", label(name), monitors::stat(ebpf, 1).unwrap_or(0));
    }

    // The advanced monitor samples and deduplicates in the kernel; the other monitors do neither,
    // so they have no sample rather than a misleading 0.
    let advanced: Vec<_> = state
        .objects
        .iter()
        .filter_map(|(name, ebpf)| monitors::advanced::stats(ebpf).ok().map(|s| (name, s)))
        .collect();
    family(&mut out, "tapio_events_sampled_out_total", "counter", "Events dropped in the kernel by sampling (the `sampling` rate), before the buffer.");
    for (name, s) in &advanced {
        let _ = writeln!(out, "tapio_events_sampled_out_total{{monitor=\"{}\"}} {}", label(name), s.sampled);
    }
    family(&mut out, "tapio_events_deduplicated_total", "counter", "Events suppressed in the kernel as repeats within `dedup_window_ms`.");
    for (name, s) in &advanced {
        let _ = writeln!(out, "tapio_events_deduplicated_total{{monitor=\"{}\"}} {}", label(name), s.deduped);
    }

    let c = &state.counters;
    family(&mut out, "tapio_events_written_total", "counter", "Events written to the output (the first sink; see tapio_sink_sent_total for every sink).");
    let _ = writeln!(out, "tapio_events_written_total {}", c.events_written.load(Ordering::Relaxed));
    family(&mut out, "tapio_output_dropped_total", "counter", "Events dropped in the loader because the first sink's queue was full (its reader stalled or too slow); see tapio_sink_dropped_total for every sink.");
    let _ = writeln!(out, "tapio_output_dropped_total {}", c.output_dropped.load(Ordering::Relaxed));
    family(&mut out, "tapio_output_queue_events", "gauge", "Events waiting for the first sink's writer thread.");
    let _ = writeln!(out, "tapio_output_queue_events {}", c.output_queue_events.load(Ordering::Relaxed));
    family(&mut out, "tapio_output_queue_capacity", "gauge", "Bound on events waiting for the first sink's writer (`output_queue_events`, or its `queue_events`).");
    let _ = writeln!(out, "tapio_output_queue_capacity {}", c.output_queue_bound.load(Ordering::Relaxed));
    let sinks = c.sinks.lock().map(|s| s.clone()).unwrap_or_default();
    /// Name, type, help and reading of one `tapio_sink_*` family.
    type SinkFamily = (&'static str, &'static str, &'static str, fn(&crate::output::sink::SinkCounters) -> u64);
    let sink_families: [SinkFamily; 5] = [
        ("tapio_sink_queued_events", "gauge", "Events waiting in the sink's queue.", |s| s.queued.load(Ordering::Relaxed)),
        ("tapio_sink_queue_capacity", "gauge", "Bound on events waiting in the sink's queue (`queue_events`); beyond it `when_full` applies.", |s| s.bound.load(Ordering::Relaxed)),
        ("tapio_sink_sent_total", "counter", "Events the sink wrote (stdout, file) or its receiver accepted (otlp).", |s| s.sent.load(Ordering::Relaxed)),
        ("tapio_sink_dropped_total", "counter", "Events the sink dropped: its queue was full under `when_full = \"drop\"`, or its receiver refused them for good.", |s| s.dropped.load(Ordering::Relaxed)),
        ("tapio_sink_retries_total", "counter", "Export attempts that failed and were retried with backoff (otlp).", |s| s.retries.load(Ordering::Relaxed)),
    ];
    for (name, kind, help, value) in sink_families {
        family(&mut out, name, kind, help);
        for s in &sinks {
            let _ = writeln!(out, "{name}{{sink=\"{}\",kind=\"{}\"}} {}", label(&s.name), s.kind, value(s));
        }
    }
    family(&mut out, "tapio_decode_errors_total", "counter", "Records from the kernel that could not be decoded.");
    let _ = writeln!(out, "tapio_decode_errors_total {}", c.decode_errors.load(Ordering::Relaxed));
    family(&mut out, "tapio_config_reloads_total", "counter", "Configuration reloads applied on SIGHUP.");
    let _ = writeln!(out, "tapio_config_reloads_total {}", c.config_reloads.load(Ordering::Relaxed));
    family(&mut out, "tapio_config_reload_errors_total", "counter", "SIGHUP reloads refused because the file was invalid (the previous values stay).");
    let _ = writeln!(out, "tapio_config_reload_errors_total {}", c.config_reload_errors.load(Ordering::Relaxed));
    if let Some(cri) = c.cri.get() {
        family(&mut out, "tapio_cri_lookups_total", "counter", "Containers the CRI runtime was asked about (once per new container id).");
        let _ = writeln!(out, "tapio_cri_lookups_total {}", cri.lookups.load(Ordering::Relaxed));
        family(&mut out, "tapio_cri_cache_hits_total", "counter", "Container ids seen again whose lookup was not repeated (the cache answered).");
        let _ = writeln!(out, "tapio_cri_cache_hits_total {}", cri.cache_hits.load(Ordering::Relaxed));
        family(&mut out, "tapio_cri_failures_total", "counter", "CRI lookups that failed (runtime unreachable or erring, or the lookup queue full); those events carry no names.");
        let _ = writeln!(out, "tapio_cri_failures_total {}", cri.failures.load(Ordering::Relaxed));
        family(&mut out, "tapio_cri_unknown_total", "counter", "CRI lookups the runtime answered with no such container (another runtime's, or removed).");
        let _ = writeln!(out, "tapio_cri_unknown_total {}", cri.unknown.load(Ordering::Relaxed));
    }
    // --- dns correlator: a flood of unanswered queries shows here as inflight at capacity and
    // a climbing evicted count, while the loader's memory stays flat ---
    family(&mut out, "tapio_dns_inflight", "gauge", "DNS queries waiting for a response in the loader's correlator.");
    let _ = writeln!(out, "tapio_dns_inflight {}", c.dns_inflight.load(Ordering::Relaxed));
    family(&mut out, "tapio_dns_inflight_capacity", "gauge", "Bound on DNS queries waiting at once; beyond it the oldest is dropped.");
    let _ = writeln!(out, "tapio_dns_inflight_capacity {}", c.dns_inflight_capacity.load(Ordering::Relaxed));
    family(&mut out, "tapio_dns_inflight_evicted_total", "counter", "DNS queries dropped unanswered (no timeout event) because the correlator was full.");
    let _ = writeln!(out, "tapio_dns_inflight_evicted_total {}", c.dns_inflight_evicted.load(Ordering::Relaxed));
    // --- end dns correlator ---
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
