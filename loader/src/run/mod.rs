//! `tapio-load run`: load the chosen monitors, attach, drain their buffers into the output until
//! SIGINT or SIGTERM, then detach everything and return.
//!
//! This module is the loop and its order of work; each concern it runs is a module of its own:
//! [`load`] (the kernel filters, loading or adopting pinned monitors), [`attribution`] (the
//! cgroup map, its watcher, CRI names), [`stages`] (dns order, attribution, filters between the
//! buffers and the sinks), [`reload`] (SIGHUP and the watched configuration file).

mod attribution;
mod load;
mod reload;
mod stages;

use std::{io, path::PathBuf, sync::Arc};

use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

pub use load::{load_all, load_btf, Started};

use self::{attribution::{Attribution, HOLD_POLL}, load::Monitors, stages::Stages};
use crate::{
    events::{self, DecodeOptions},
    monitors::{self, LoadOptions, LoadedMonitor, MonitorError, MonitorSpec},
    output::{
        metrics::{self, Counters, SharedObjects},
        sink::{Fanout, SinkError, SinkSpec},
    },
    transport::DeliveryPolicy,
};

/// What `run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub monitors: Vec<&'static MonitorSpec>,
    /// An external BTF file instead of the kernel's own.
    pub btf: Option<PathBuf>,
    /// Where events go, every sink after the same filters (crate::output::sink): by default one
    /// `stdout` sink of JSON lines.
    pub sinks: Vec<SinkSpec>,
    pub decode: DecodeOptions,
    pub load: LoadOptions,
    /// The Prometheus endpoint; None: `metrics_address = "off"`.
    pub metrics: Option<crate::output::metrics::MetricsOptions>,
    /// Ports the dns monitor parses and the network monitor reports UDP flows of (at most 4,
    /// `DNS_PORTS_MAX` in probes/include/dns_ports.bpf.h).
    pub dns_ports: Vec<u16>,
    /// The configuration file SIGHUP re-reads; None: SIGHUP only logs.
    pub reload: Option<crate::config::Reload>,
    /// `--pin-path`: pin links and maps here (they outlive the run), or adopt the pins found
    /// here instead of loading (see crate::pin). None: nothing outlives the run.
    pub pin_path: Option<PathBuf>,
    /// `strict`: the first monitor that fails stops the run. Otherwise the run goes on with the
    /// monitors that loaded and reports the others ([`MonitorFailure`]).
    pub strict: bool,
    /// Container and pod attribution (crate::attribution): at most this many pod and container
    /// cgroups remembered; None: off (events carry `cgroup_id` only).
    pub attribution: Option<usize>,
    /// The CRI socket asked for pod and container names (tapio-cri); None: no names. Only with
    /// `attribution`.
    pub cri_socket: Option<PathBuf>,
    /// The source filters (crate::filter): the kernel half is filled before any program is
    /// attached, the rest applies to every decoded event.
    pub filters: crate::filter::Filters,
}

// What the run reports for a monitor that did not start: kept in the runtime, beside
// MonitorError, so the metrics need not import the run loop.
pub use crate::monitors::MonitorFailure;

fn failures_text(failed: &[MonitorFailure]) -> String {
    failed.iter().map(|f| f.reason.clone()).collect::<Vec<_>>().join("\n")
}

/// Why a run could not start or went wrong.
#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Privilege(#[from] crate::privileges::PrivilegeError),
    #[error("btf: no kernel BTF at /sys/kernel/btf/vmlinux ({0}); pass --btf FILE with this kernel's BTF")]
    NoKernelBtf(#[source] aya::BtfError),
    #[error("btf: {path}: {source}")]
    BtfFile {
        path: PathBuf,
        #[source]
        source: aya::BtfError,
    },
    #[error("{source}\nhint: the kernel refused for lack of privilege: run as root or grant CAP_BPF and CAP_PERFMON")]
    Permission {
        #[source]
        source: MonitorError,
    },
    #[error(transparent)]
    Monitor(MonitorError),
    #[error("output {path}: {source}")]
    Output {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("signal handler: {0}")]
    Signal(#[source] io::Error),
    #[error("event loop: register event buffers: {0}")]
    Reactor(#[source] io::Error),
    #[error(transparent)]
    Metrics(#[from] crate::output::metrics::MetricsError),
    #[error(transparent)]
    Pin(#[from] crate::pin::PinError),
    /// Nothing that was asked for runs: every monitor failed.
    #[error("no monitor could start ({} asked for):\n{}{}", failed.len(), failures_text(failed), if failed.iter().all(|f| f.permission) { "\nhint: the kernel refused for lack of privilege: run as root or grant CAP_BPF and CAP_PERFMON" } else { "" })]
    NothingRunning { failed: Vec<MonitorFailure> },
}

/// A sink that could not open or stopped on an error ends the run, named as the output it was.
fn output_failed(e: SinkError) -> RunError {
    match e {
        SinkError::Failed { sink, source } | SinkError::Open { sink, source } => RunError::Output { path: sink, source },
    }
}

/// How long shutdown waits for the sinks to write (or send) what is queued.
const OUTPUT_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Totals reported when the run ends.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub written: u64,
    pub decode_errors: u64,
}

/// Runs until SIGINT/SIGTERM. Loaded monitors are dropped before returning: no program, link or
/// map outlives the run (pinned ones stay pinned, see crate::pin).
pub async fn run(mut options: RunOptions) -> Result<RunSummary, RunError> {
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(RunError::Signal)?;

    load::unmap_large_frees();
    let filtering = load::install_filters(&mut options);
    let Monitors { loaded, failed, adopted } = load::load_or_adopt(&options)?;
    let attached: Vec<monitors::AttachReport> = loaded.iter().flat_map(|m| m.reports.iter().cloned()).collect();
    let counters = Arc::new(Counters::default());
    let metrics_listener = match &options.metrics {
        Some(m) => metrics::bind(m).await?,
        None => None,
    };
    for m in &loaded {
        for r in &m.reports {
            info!(monitor = r.monitor, program = r.program, path = %r.path, transport = %m.transport, "attached");
        }
    }
    // The one fan-out point: every batch, after every filter, goes to every sink, each on a
    // thread of its own behind a bounded queue (crate::output::sink), so a stalled reader of
    // one output never blocks this loop unless that sink says `when_full = "block"`.
    let mut sink = Fanout::start(options.sinks.clone(), counters.clone()).map_err(output_failed)?;
    let output_name = sink.describe();

    // Every monitor's buffers are drained by this loop (crate::transport::Streamer), on their
    // wake-ups and on the delivery policy's timer, and decoded where they lie. On shutdown they
    // are drained one last time, so nothing emitted before the signal is lost.
    let delivery = options.load.delivery;
    let mut ebpfs = Vec::new();
    // Links the monitors own outright (cgroup bpf_links): held until the run ends, as `ebpf`
    // holds the others; dropping them would detach those programs.
    let mut held_links = Vec::new();
    let mut sources = Vec::new();
    for m in loaded {
        let LoadedMonitor { spec, ebpf, events, transport, links, .. } = m;
        info!(monitor = spec.name, %transport, delivery = %delivery.policy, bound_ms = delivery.bound_ms, "delivery: {}", delivery.describe(transport));
        ebpfs.push((spec.name, ebpf));
        held_links.push(links);
        sources.push(events);
    }
    let attribution = Attribution::start(&options, &counters, &mut sources);
    // Adopted monitors stream from their pinned buffers. An adopted ring keeps the wake-up
    // threshold its programs were loaded with, which this run cannot change: under `immediate`
    // its reader keeps the drain timer all the same, or records of programs loaded `batched`
    // would wait for a quarter-full ring.
    let pinned: Vec<crate::pin::PinnedProgram> = adopted.iter().flat_map(|a| a.programs.iter().cloned()).collect();
    let running = ebpfs.len() + adopted.len();
    let mut reader_delivery = delivery;
    for adopted in adopted {
        info!(monitor = adopted.monitor, transport = %adopted.events.transport, delivery = %delivery.policy, bound_ms = delivery.bound_ms, "delivery: {}", delivery.describe(adopted.events.transport));
        if delivery.policy == DeliveryPolicy::Immediate && adopted.events.transport == crate::bundle::Transport::Ringbuf {
            warn!(monitor = adopted.monitor, "adopted ring: its programs keep the wake-ups they were loaded with; draining on the {} ms timer as well", delivery.bound_ms);
            reader_delivery.policy = DeliveryPolicy::Batched;
        }
        sources.push(adopted.events);
    }
    // One reader for every monitor: one drain timer however many monitors and CPUs.
    let mut streamer = crate::transport::Streamer::new(sources, reader_delivery).map_err(RunError::Reactor)?;
    // The metrics endpoint reads the objects while the run loop streams.
    let ebpfs: SharedObjects = Arc::new(ebpfs);
    let metrics_task = metrics_listener.map(|listener| {
        info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics endpoint");
        let state = metrics::State {
            objects: ebpfs.clone(),
            // The plan for this kernel: every program that attached at start, loaded or adopted
            // from pins. Alternatives not taken and programs this kernel cannot run (reported at
            // start) are not owed; monitors that failed are reported apart (`failed`).
            planned: attached.len() + pinned.len(),
            attached,
            requested: options.monitors.iter().map(|m| m.name).collect(),
            failed: failed.clone(),
            counters: counters.clone(),
            filter_drops: filtering.drops.clone(),
            kernel_release: crate::plan::kernel_release(),
            pinned,
        };
        tokio::spawn(metrics::serve(listener, Arc::new(state)))
    });
    load::return_startup_heap();
    announce(running, &failed, delivery, &output_name);

    // dns: events are put in kernel time order, then responses matched to queries; a periodic
    // tick reports the queries whose window ran out as `timeout` events (see crate::dns::order).
    let dns_on = options.monitors.iter().any(|m| m.name == "dns");
    let hold = crate::dns::order::hold_for(options.load.delivery.bound());
    let mut stages = Stages::new(
        crate::dns::Sequencer::new(options.decode.dns_timeout, crate::dns::DEFAULT_CAPACITY, hold),
        attribution,
        filtering,
    );
    // The cgroup sets were resolved over the early scan (load::install_filters); the run's own
    // scan may know more, so they are resolved again on the first pass.
    stages.filtering.dirty = stages.filtering.filters.by_cgroup();
    stages.publish(&counters);
    let mut dns_tick = tokio::time::interval(std::time::Duration::from_millis(100));
    let mut watch = watch_config(options.reload.as_ref());
    let mut reload_at: Option<tokio::time::Instant> = None;
    let mut summary = RunSummary::default();
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = interrupt.recv(), if !stopping => stopping = true,
            _ = terminate.recv(), if !stopping => stopping = true,
            _ = hangup.recv() => {
                if let Some(config) = reload::reload("SIGHUP", &mut options.decode, &mut stages.dns, options.reload.as_ref(), &counters, &ebpfs) {
                    reload::filters_reloaded(&mut stages.filtering, config.filters);
                }
                if let Some(watch) = watch.as_mut() {
                    watch.get_mut().applied();
                }
            }
            // The configuration file's directory changed (an edit, a ConfigMap's `..data` swap):
            // wait until it settles, then reload if the content differs (crate::config_watch).
            ready = async { watch.as_mut().expect("guarded").readable_mut().await }, if watch.is_some() => {
                match ready {
                    Ok(mut guard) => {
                        guard.get_inner_mut().drain();
                        guard.clear_ready();
                        reload_at = Some(tokio::time::Instant::now() + crate::config_watch::SETTLE);
                    }
                    Err(e) => {
                        warn!("config watch: {e}; changes apply on SIGHUP only");
                        watch = None;
                    }
                }
            }
            _ = tokio::time::sleep_until(reload_at.unwrap_or_else(tokio::time::Instant::now)), if reload_at.is_some() => {
                reload_at = None;
                if watch.as_mut().is_some_and(|w| w.get_mut().changed()) {
                    if let Some(config) = reload::reload("config file changed", &mut options.decode, &mut stages.dns, options.reload.as_ref(), &counters, &ebpfs) {
                        reload::filters_reloaded(&mut stages.filtering, config.filters);
                    }
                }
            }
            _ = dns_tick.tick(), if dns_on => {
                // What the watermark has passed comes out in kernel time order, with the
                // timeouts that fell due.
                stages.advance();
                let released = stages.release(false);
                if !released.is_empty() {
                    sink.send(released).await.map_err(output_failed)?;
                }
                stages.publish(&counters);
            }
            ready = streamer.ready() => ready.map_err(RunError::Reactor)?,
            // attribution: a held batch is looked at again soon (its names, or its deadline).
            _ = tokio::time::sleep(HOLD_POLL), if stages.holding() => {}
        }
        // Whatever woke the loop, take what is waiting (cheap when nothing is: two positions per
        // buffer are compared); on a stop signal this is the last pass. Records are decoded here
        // and written by the output thread, so a stalled reader never holds this loop.
        let decode = &options.decode;
        let taken = streamer.drain_each(|record| {
            // attribution: the watcher's records update the map and are not output.
            if let Some(mkdir) = monitors::cgroup_watch::decode(record) {
                match mkdir {
                    Ok(mkdir) => stages.observe(&mkdir),
                    Err(e) => decode_failed(&mut summary, &counters, &e),
                }
                return Ok(());
            }
            // decode_all: an advanced batch record expands into its events.
            match events::decode_all(record, decode) {
                Ok(decoded) => decoded.into_iter().for_each(|event| stages.push(event)),
                Err(e) => decode_failed(&mut summary, &counters, &e),
            }
            Ok(())
        });
        let taken = taken.map_err(|source| RunError::Output { path: output_name.clone(), source })?;
        if taken > 0 {
            stages.advance();
        }
        let out = stages.release(stopping);
        stages.sync_filters(&ebpfs);
        if !out.is_empty() {
            sink.send(out).await.map_err(output_failed)?;
            stages.publish(&counters);
        }
        if stopping {
            break;
        }
    }
    // The run is over and no record is on its way: release what the watermark still holds.
    stages.flush();
    let last = stages.release(true);
    if let Some(a) = stages.attribution.as_mut() {
        a.stop_naming();
    }
    if !last.is_empty() {
        sink.send(last).await.map_err(output_failed)?;
    }
    summary.written = sink.finish(OUTPUT_DRAIN_TIMEOUT).map_err(output_failed)?;
    // The endpoint holds a reference to the objects: stop it first so dropping ours detaches.
    if let Some(task) = metrics_task {
        task.abort();
        let _ = task.await;
    }
    for (name, ebpf) in ebpfs.iter() {
        let emitted = monitors::stat(ebpf, 0).unwrap_or(0);
        let lost = monitors::stat(ebpf, 1).unwrap_or(0);
        info!(monitor = name, emitted, lost, "detaching");
    }
    if let Some(a) = stages.attribution.as_mut() {
        a.report();
        a.detach();
    }
    drop(held_links);
    drop(ebpfs);
    // The pins keep programs attached after this process.
    if let Some(dir) = &options.pin_path {
        crate::pin::report_kept(dir);
    }
    Ok(summary)
}

/// A record that did not decode: counted, logged, and the run goes on.
fn decode_failed(summary: &mut RunSummary, counters: &Counters, e: &dyn std::fmt::Display) {
    summary.decode_errors += 1;
    counters.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    warn!("{e}");
}

/// The start-up line: on stderr as it always was in text, a structured record in JSON.
fn announce(running: usize, failed: &[MonitorFailure], delivery: crate::transport::Delivery, output_name: &str) {
    let degraded = if failed.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = failed.iter().map(|f| f.monitor).collect();
        format!(" ({} not running: {})", failed.len(), names.join(", "))
    };
    let line = format!(
        "tapio-load: attached {running} monitor(s){degraded}; delivery {} (bound {} ms); streaming events to {output_name}",
        delivery.policy,
        delivery.bound_ms
    );
    match crate::logging::format() {
        crate::logging::LogFormat::Text => eprintln!("{line}"),
        crate::logging::LogFormat::Json => info!(
            monitors_running = running,
            monitors_failed = failed.len(),
            delivery = %delivery.policy,
            bound_ms = delivery.bound_ms,
            output = %output_name,
            "{line}"
        ),
    }
}

/// The configuration file is watched as well as re-read on SIGHUP; None: SIGHUP only.
fn watch_config(reload: Option<&crate::config::Reload>) -> Option<tokio::io::unix::AsyncFd<crate::config_watch::ConfigWatch>> {
    let r = reload?;
    let registered = crate::config_watch::ConfigWatch::new(&r.file).and_then(|w| {
        // SAFETY: the watch owns its inotify fd and keeps it open, unchanged, until it is
        // dropped, which happens only when this AsyncFd is dropped.
        unsafe { tokio::io::unix::AsyncFd::register_with_interest(w, tokio::io::Interest::READABLE) }.map_err(io::Error::from)
    });
    match registered {
        Ok(w) => {
            info!(file = %r.file.display(), "watching the configuration file; changes apply without a signal");
            Some(w)
        }
        Err(e) => {
            warn!(file = %r.file.display(), "config watch: {e}; changes apply on SIGHUP only");
            None
        }
    }
}
