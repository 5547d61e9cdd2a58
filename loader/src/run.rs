//! `tapio-load run`: load the chosen monitors, attach, drain their buffers into the output until
//! SIGINT or SIGTERM, then detach everything and return.

use std::{
    fs::File,
    io::{self, Write},
    path::PathBuf,
};

use aya::Btf;

use thiserror::Error;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
};
use tracing::{info, warn};

use crate::{
    events::{self, DecodeOptions},
    monitors::{self, LoadOptions, LoadedMonitor, MonitorError, MonitorSpec},
    output::json::JsonLines,
    privileges, tracefs,
};

/// What `run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub monitors: Vec<&'static MonitorSpec>,
    /// An external BTF file instead of the kernel's own.
    pub btf: Option<PathBuf>,
    /// JSON lines go here; None is stdout.
    pub output_file: Option<PathBuf>,
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
}

/// Why a run could not start or went wrong.
#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Privilege(#[from] privileges::PrivilegeError),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
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
    #[error("monitor {monitor}: map dns_ports: {source}")]
    DnsPorts {
        monitor: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(transparent)]
    Pin(#[from] crate::pin::PinError),
}

/// Reads the BTF the loader relocates against: the given file, or the kernel's own.
pub fn load_btf(path: Option<&PathBuf>) -> Result<Btf, RunError> {
    match path {
        Some(path) => Btf::parse_file(path, aya::Endianness::default())
            .map_err(|source| RunError::BtfFile { path: path.clone(), source }),
        None => Btf::from_sys_fs().map_err(RunError::NoKernelBtf),
    }
}

/// Loads and attaches every requested monitor; on the first failure, what was attached is dropped.
pub fn load_all(options: &RunOptions) -> Result<Vec<LoadedMonitor>, RunError> {
    privileges::check()?;
    privileges::raise_memlock();
    tracefs::ensure_mounted()?;
    let btf = load_btf(options.btf.as_ref())?;
    options
        .monitors
        .iter()
        .map(|spec| {
            monitors::load(spec, Some(&btf), &options.load).map_err(|e| {
                if e.is_permission() {
                    RunError::Permission { source: e }
                } else {
                    RunError::Monitor(e)
                }
            })
        })
        .collect()
}

/// Totals reported when the run ends.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub written: u64,
    pub decode_errors: u64,
}

/// Runs until SIGINT/SIGTERM. Loaded monitors are dropped before returning: no program, link or
/// map outlives the run.
pub async fn run(mut options: RunOptions) -> Result<RunSummary, RunError> {
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(RunError::Signal)?;

    // --- pin (crate::pin): adopt a previous run's pinned monitors, or pin what is loaded ---
    let adopted = match &options.pin_path {
        Some(dir) => crate::pin::adopt(dir, &options.monitors, &options.load.delivery)?,
        None => None,
    };
    let mut loaded = if adopted.is_some() { Vec::new() } else { load_all(&options)? };
    if let (Some(dir), None) = (&options.pin_path, &adopted) {
        crate::pin::pin_all(dir, &mut loaded)?;
    }
    // --- end pin ---
    // --- operations (crate::output::metrics, crate::config): dns ports, attach reports ---
    for m in &mut loaded {
        monitors::dns::set_ports(&mut m.ebpf, &options.dns_ports)
            .map_err(|source| RunError::DnsPorts { monitor: m.spec.name, source })?;
    }
    let attached: Vec<monitors::AttachReport> = loaded.iter().flat_map(|m| m.reports.iter().cloned()).collect();
    let counters = std::sync::Arc::new(crate::output::metrics::Counters::default());
    let metrics_listener = match &options.metrics {
        Some(m) => crate::output::metrics::bind(m).await?,
        None => None,
    };
    // --- end operations ---
    for m in &loaded {
        for r in &m.reports {
            info!(monitor = r.monitor, program = r.program, path = %r.path, transport = %m.transport, "attached");
        }
    }
    let (output_name, writer): (String, Box<dyn Write + Send>) = match &options.output_file {
        Some(path) => {
            let file = File::create(path)
                .map_err(|source| RunError::Output { path: path.display().to_string(), source })?;
            (path.display().to_string(), Box::new(file))
        }
        None => ("stdout".to_owned(), Box::new(io::stdout())),
    };
    let mut sink = JsonLines::new(writer);

    // Each monitor's buffers are drained by its own task (crate::transport::stream), on their
    // wake-ups and on the delivery policy's timer; batches meet here. On shutdown every task
    // drains its buffers one last time, so nothing emitted before the signal is lost.
    let delivery = options.load.delivery;
    let (tx, mut rx) = mpsc::channel::<crate::transport::Batch>(64);
    let (stop_tx, stop_rx) = watch::channel(false);
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
    // --- pin: adopted monitors stream from their pinned buffers; nothing was loaded ---
    let pinned: Vec<crate::pin::PinnedProgram> = adopted.iter().flatten().flat_map(|a| a.programs.iter().cloned()).collect();
    for adopted in adopted.into_iter().flatten() {
        info!(monitor = adopted.monitor, transport = %adopted.events.transport, delivery = %delivery.policy, bound_ms = delivery.bound_ms, "delivery: {}", delivery.describe(adopted.events.transport));
        sources.push(adopted.events);
    }
    // --- end pin ---
    let mut tasks = Vec::new();
    for source in sources {
        // SAFETY: the source owns its epoll fd and keeps it open, unchanged, until it is dropped,
        // which happens only when this AsyncFd is dropped.
        let source = unsafe { tokio::io::unix::AsyncFd::register_with_interest(source, tokio::io::Interest::READABLE) }
            .map_err(|e| RunError::Reactor(e.into()))?;
        let (tx, stop_rx) = (tx.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::transport::stream(source, delivery, tx, stop_rx).await {
                warn!("event loop: {e}");
            }
        }));
    }
    drop(tx);
    // --- operations: the metrics endpoint reads the objects while the run loop streams ---
    let ebpfs: crate::output::metrics::SharedObjects = std::sync::Arc::new(ebpfs);
    let metrics_task = metrics_listener.map(|listener| {
        info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics endpoint");
        let state = crate::output::metrics::State {
            objects: ebpfs.clone(),
            // The plan for this kernel: every program that attached at start. Alternatives not
            // taken and programs this kernel cannot run (reported at start) are not owed.
            planned: attached.len(),
            attached,
            counters: counters.clone(),
            kernel_release: crate::plan::kernel_release(),
            pinned, // --- pin ---
        };
        tokio::spawn(crate::output::metrics::serve(listener, std::sync::Arc::new(state)))
    });
    // --- end operations ---
    eprintln!(
        "tapio-load: attached {} monitor(s); delivery {} (bound {} ms); streaming events to {output_name}",
        ebpfs.len(),
        delivery.policy,
        delivery.bound_ms
    );

    let mut summary = RunSummary::default();
    let mut stopping = false;
    // dns: events are put in kernel time order, then responses matched to queries; a periodic
    // tick reports the queries whose window ran out as `timeout` events (see crate::dns::order).
    let dns_on = options.monitors.iter().any(|m| m.name == "dns");
    let hold = crate::dns::order::hold_for(&options.load.delivery);
    let mut dns = crate::dns::Sequencer::new(options.decode.dns_timeout, crate::dns::DEFAULT_CAPACITY, hold);
    let mut ordered = Vec::new();
    dns.publish(&counters); // metrics: tapio_dns_inflight*
    let mut dns_tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = interrupt.recv(), if !stopping => { stopping = true; let _ = stop_tx.send(true); }
            _ = terminate.recv(), if !stopping => { stopping = true; let _ = stop_tx.send(true); }
            _ = hangup.recv() => {
                reload(&mut options.decode, &mut dns, options.reload.as_ref(), &counters);
                // --- advanced: sampling, dedup window, batch size and flush bound follow the file ---
                if let Some(source) = options.reload.as_ref() {
                    monitors::advanced::on_reload(ebpfs.iter().map(|(_, ebpf)| ebpf), source);
                }
                // --- end advanced ---
            }
            _ = dns_tick.tick(), if dns_on => {
                dns.advance(crate::dns::monotonic_ns(), &mut ordered);
                for event in ordered.drain(..) {
                    sink.write(&event).map_err(|source| RunError::Output { path: output_name.clone(), source })?;
                }
                dns.publish(&counters); // metrics: tapio_dns_inflight*
                sink.flush().map_err(|source| RunError::Output { path: output_name.clone(), source })?;
            }
            batch = rx.recv() => {
                // None: every drain task has finished its last pass.
                let Some(batch) = batch else { break };
                for record in &batch {
                    // decode_all: an advanced batch record expands into its events.
                    match events::decode_all(record, &options.decode) {
                        Ok(decoded) => for event in decoded {
                            dns.push(event, &mut ordered);
                        }
                        Err(e) => {
                            summary.decode_errors += 1;
                            counters.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            warn!("{e}");
                        }
                    }
                }
                dns.advance(crate::dns::monotonic_ns(), &mut ordered);
                for event in ordered.drain(..) {
                    sink.write(&event).map_err(|source| RunError::Output { path: output_name.clone(), source })?;
                }
                sink.flush().map_err(|source| RunError::Output { path: output_name.clone(), source })?;
                counters.events_written.store(sink.written(), std::sync::atomic::Ordering::Relaxed);
                dns.publish(&counters); // metrics: tapio_dns_inflight*
            }
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    dns.flush(crate::dns::monotonic_ns(), &mut ordered);
    for event in ordered.drain(..) {
        let _ = sink.write(&event);
    }
    let _ = sink.flush();
    summary.written = sink.written();
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
    drop(held_links);
    drop(ebpfs);
    // --- pin: the pins keep programs attached after this process ---
    if let Some(dir) = &options.pin_path {
        crate::pin::report_kept(dir);
    }
    // --- end pin ---
    Ok(summary)
}

/// SIGHUP: re-reads the configuration file and applies what can change without reloading any
/// program (argv_max, dns_timeout_ms). An invalid file is refused and the running values stay.
fn reload(
    decode: &mut DecodeOptions,
    dns: &mut crate::dns::Sequencer,
    source: Option<&crate::config::Reload>,
    counters: &crate::output::metrics::Counters,
) {
    let Some(source) = source else {
        warn!("SIGHUP: no --config file to re-read; ignored");
        return;
    };
    match source.load() {
        Ok(config) => {
            decode.argv_max = config.argv_max;
            decode.dns_timeout = std::time::Duration::from_millis(config.dns_timeout_ms);
            dns.set_window(decode.dns_timeout);
            counters.config_reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            info!(argv_max = config.argv_max, dns_timeout_ms = config.dns_timeout_ms, "SIGHUP: configuration reloaded");
        }
        Err(e) => {
            counters.config_reload_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            warn!("SIGHUP: {e}; keeping the running configuration");
        }
    }
}
