//! `tapio-load run`: load the chosen monitors, attach, drain their buffers into the output until
//! SIGINT or SIGTERM, then detach everything and return.

use std::{io, path::PathBuf};

use aya::Btf;

use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::{
    events::{self, DecodeOptions},
    monitors::{self, LoadOptions, LoadedMonitor, MonitorError, MonitorSpec, TargetBtf},
    output::sink::{Fanout, SinkError, SinkSpec},
    privileges,
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

/// Asks the runtime about the containers the attributor met since the last call, and gives the
/// map the answers that have come (never waits: see tapio_cri::Resolver).
/// Returns whether any container got its names, so the filters' cgroup sets are recomputed.
fn name_containers(a: &mut crate::attribution::Attributor, cri: Option<&mut tapio_cri::Resolver>) -> bool {
    let new = a.take_new_containers();
    let Some(cri) = cri else { return false };
    for id in &new {
        cri.ask(id);
    }
    let mut named = false;
    for (id, names) in cri.answers() {
        named = true;
        a.name(&id, |at| {
            at.pod_name = names.pod_name.clone();
            at.pod_namespace = names.pod_namespace.clone();
            at.container_name = names.container_name.clone();
            at.container_image = names.container_image.clone();
            at.pod_labels = names.pod_labels.clone();
        });
    }
    named
}

/// An event of a container whose CRI names are on their way waits at most this long for them.
/// A healthy runtime answers in a few milliseconds; past the bound the batch goes out with what
/// is known (its later events carry the names).
const NAME_HOLD: std::time::Duration = std::time::Duration::from_millis(250);
/// How often held batches are looked at while there are any.
const HOLD_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// A batch waiting for names.
struct Held {
    deadline: tokio::time::Instant,
    events: Vec<events::Event>,
}

/// Holds `batch` while one of its events is of a container whose names are being asked for (at
/// most [`NAME_HOLD`]); returns what may go out now, in order: batches behind a held one wait
/// behind it. `all`: release everything (the run ends). Without a CRI socket, or with no lookup
/// in flight and nothing held, the batch passes straight through.
fn hold_for_names(
    a: &mut crate::attribution::Attributor,
    cri: Option<&tapio_cri::Resolver>,
    held: &mut std::collections::VecDeque<Held>,
    batch: Vec<events::Event>,
    all: bool,
) -> Vec<events::Event> {
    let Some(cri) = cri else { return batch };
    if held.is_empty() && (cri.in_flight() == 0 || all) {
        return batch;
    }
    let waiting = |events: &[events::Event]| {
        events.iter().any(|e| e.container.as_ref().and_then(|c| c.container_id.as_deref()).is_some_and(|id| cri.pending(id)))
    };
    if !batch.is_empty() {
        if held.is_empty() && !waiting(&batch) {
            return batch;
        }
        held.push_back(Held { deadline: tokio::time::Instant::now() + NAME_HOLD, events: batch });
    }
    let now = tokio::time::Instant::now();
    let mut out = Vec::new();
    while let Some(front) = held.front() {
        if !all && front.deadline > now && waiting(&front.events) {
            break;
        }
        let mut events = held.pop_front().map(|h| h.events).unwrap_or_default();
        events.iter_mut().for_each(|e| a.refresh(e));
        out.append(&mut events);
    }
    out
}

/// What [`load_all`] started: the monitors that loaded and why the others did not.
#[derive(Default)]
pub struct Started {
    pub loaded: Vec<LoadedMonitor>,
    pub failed: Vec<MonitorFailure>,
}

fn failures_text(failed: &[MonitorFailure]) -> String {
    failed.iter().map(|f| f.reason.clone()).collect::<Vec<_>>().join("\n")
}

/// Why a run could not start or went wrong.
#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Privilege(#[from] privileges::PrivilegeError),
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

/// Gives the heap that loading freed back to the kernel. Relocating against the kernel's BTF
/// parses all of it (tens of MB on a 6.x kernel) and frees it once every monitor has loaded;
/// glibc keeps freed memory for reuse, so the agent sat at its load-time peak for the whole run
/// (49 MB resident after start with every monitor, 17 MB once trimmed; the static musl build
/// that the image ships already returns it: 12 MB).
fn return_startup_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory at the top of and inside glibc's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reads the BTF the loader relocates against: the given file, or the kernel's own.
pub fn load_btf(path: Option<&PathBuf>) -> Result<Btf, RunError> {
    match path {
        Some(path) => Btf::parse_file(path, aya::Endianness::default())
            .map_err(|source| RunError::BtfFile { path: path.clone(), source }),
        None => Btf::from_sys_fs().map_err(RunError::NoKernelBtf),
    }
}

/// The BTF `run` relocates against, with the same errors as [`load_btf`]: the given file, parsed
/// here once and lent to every load (Some); or the kernel's own (None: `TargetBtf::Kernel`), which
/// is only checked here, since every object's loader parses it anyway and two parsed copies at
/// once were the agent's start-up peak (monitors::target_btf).
fn external_btf(path: Option<&PathBuf>) -> Result<Option<Btf>, RunError> {
    match path {
        Some(_) => load_btf(path).map(Some),
        None => monitors::target_btf::check_kernel().map(|()| None).map_err(RunError::NoKernelBtf),
    }
}

/// `external`'s types, or the kernel's own when there is no file.
fn target(external: Option<&Btf>) -> TargetBtf<'_> {
    external.map_or(TargetBtf::Kernel, TargetBtf::Parsed)
}

/// Loads and attaches every requested monitor. A monitor that fails is reported and left out,
/// unless `options.strict`: then the first failure is returned and what was attached is dropped.
/// Failing the privilege check or reading the BTF stops everything (no monitor could load).
pub fn load_all(options: &RunOptions) -> Result<Started, RunError> {
    privileges::check()?;
    privileges::raise_memlock();
    let external = external_btf(options.btf.as_ref())?;
    let mut started = Started::default();
    for spec in &options.monitors {
        let loaded = monitors::load(spec, target(external.as_ref()), &options.load).and_then(|mut m| {
            monitors::dns::set_ports(&mut m.ebpf, &options.dns_ports)
                .map(|_| m)
                .map_err(|source| MonitorError::Map { monitor: spec.name, map: monitors::dns::DNS_PORTS_MAP, source })
        });
        match loaded {
            Ok(m) => started.loaded.push(m),
            Err(e) if options.strict => {
                return Err(if e.is_permission() { RunError::Permission { source: e } } else { RunError::Monitor(e) });
            }
            Err(e) => {
                let failure = MonitorFailure::new(spec.name, &e);
                error!(monitor = spec.name, errno = failure.errno, "monitor not running: {}", failure.reason);
                started.failed.push(failure);
            }
        }
    }
    Ok(started)
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
/// map outlives the run.
pub async fn run(mut options: RunOptions) -> Result<RunSummary, RunError> {
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(RunError::Signal)?;

    // --- filters (crate::filter): the kernel half goes in before attach, so it holds from the
    // first event. The cgroup sets are resolved over a scan made now; the run's own scan and the
    // watcher's records refine them once running. ---
    let mut filtering = crate::filter::Active {
        filters: options.filters.clone(),
        drops: std::sync::Arc::new(crate::filter::AgentDrops::new()),
        kernel_on: options.filters.any(),
        dirty: false,
    };
    if filtering.kernel_on {
        let mut early = options.attribution.map(crate::attribution::Attributor::new);
        if let (Some(a), true) = (early.as_mut(), filtering.filters.by_cgroup()) {
            if let Ok(Some(root)) = crate::cgroup2::mounted_root() {
                a.scan(&root);
            }
        }
        options.load.filter = Some(filtering.kernel(early.as_ref()));
        info!(filters = ?filtering.filters, "filters: on in the kernel and in the agent");
    }
    // --- end filters ---
    // --- pin (crate::pin): adopt a previous run's pinned monitors, load and pin the others ---
    let adopted = match &options.pin_path {
        Some(dir) => crate::pin::adopt(dir, &options.monitors, &options.load.delivery)?,
        None => None,
    };
    let adopted_names: Vec<&'static str> = adopted.iter().flatten().map(|a| a.monitor).collect();
    let to_load = RunOptions {
        monitors: options.monitors.iter().copied().filter(|m| !adopted_names.contains(&m.name)).collect(),
        ..options.clone()
    };
    let Started { mut loaded, failed } =
        if to_load.monitors.is_empty() { Started::default() } else { load_all(&to_load)? };
    if loaded.is_empty() && adopted_names.is_empty() {
        return Err(RunError::NothingRunning { failed });
    }
    if let Some(dir) = &options.pin_path {
        crate::pin::pin_all(dir, &mut loaded)?;
    }
    // --- end pin ---
    // --- operations (crate::output::metrics, crate::config): attach reports ---
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
    // --- attribution: the cgroup watcher streams beside the monitors; then the scan, so a
    // cgroup made in between is announced rather than missed ---
    let mut attributor = options.attribution.map(crate::attribution::Attributor::new);
    let mut watcher = None;
    if let Some(attributor) = attributor.as_mut() {
        match external_btf(options.btf.as_ref()).map_err(|e| e.to_string()).and_then(|external| {
            monitors::load(&monitors::cgroup_watch::SPEC, target(external.as_ref()), &options.load)
                .map_err(|e| crate::errors::chain(&e))
        }) {
            Ok(m) => {
                let LoadedMonitor { ebpf, events, .. } = m;
                sources.push(events);
                watcher = Some(ebpf);
            }
            Err(e) => warn!("attribution: cgroup watcher not running ({e}); cgroups made after start are not attributed"),
        }
        match crate::cgroup2::mounted_root() {
            Ok(Some(root)) => {
                let found = attributor.scan(&root);
                info!(root = %root.display(), pod_and_container_cgroups = found, watcher = watcher.is_some(), "attribution: scanned the cgroup v2 hierarchy");
            }
            Ok(None) => warn!("attribution: no cgroup v2 hierarchy mounted; no container fields"),
            Err(e) => warn!("attribution: {e}"),
        }
    }
    // CRI names: asked once per new container id on a task of their own; an event goes out with
    // what is known when it is written and never waits for the runtime (docs/operations.md).
    let mut cri = match (attributor.as_ref(), options.cri_socket.as_ref()) {
        (Some(_), Some(socket)) => {
            let r = tapio_cri::Resolver::spawn(socket, tapio_cri::DEFAULT_CAPACITY);
            info!(socket = %socket.display(), "attribution: pod and container names from the CRI runtime");
            let _ = counters.cri.set(r.stats());
            Some(r)
        }
        (Some(_), None) => {
            info!("attribution: no CRI socket (none found, or `cri_socket = \"off\"`); no pod or container names");
            None
        }
        _ => None,
    };
    // --- end attribution ---
    filtering.dirty = filtering.filters.by_cgroup();
    // --- pin: adopted monitors stream from their pinned buffers; nothing was loaded ---
    let pinned: Vec<crate::pin::PinnedProgram> = adopted.iter().flatten().flat_map(|a| a.programs.iter().cloned()).collect();
    // An adopted ring keeps the wake-up threshold its programs were loaded with, which this run
    // cannot change: under `immediate` its reader keeps the drain timer all the same, or records
    // of programs loaded `batched` would wait for a quarter-full ring.
    let mut reader_delivery = delivery;
    for adopted in adopted.into_iter().flatten() {
        info!(monitor = adopted.monitor, transport = %adopted.events.transport, delivery = %delivery.policy, bound_ms = delivery.bound_ms, "delivery: {}", delivery.describe(adopted.events.transport));
        if delivery.policy == crate::transport::DeliveryPolicy::Immediate && adopted.events.transport == crate::bundle::Transport::Ringbuf {
            warn!(monitor = adopted.monitor, "adopted ring: its programs keep the wake-ups they were loaded with; draining on the {} ms timer as well", delivery.bound_ms);
            reader_delivery.policy = crate::transport::DeliveryPolicy::Batched;
        }
        sources.push(adopted.events);
    }
    // --- end pin ---
    // One reader for every monitor: one drain timer however many monitors and CPUs.
    let mut streamer = crate::transport::Streamer::new(sources, reader_delivery).map_err(RunError::Reactor)?;
    // --- operations: the metrics endpoint reads the objects while the run loop streams ---
    let ebpfs: crate::output::metrics::SharedObjects = std::sync::Arc::new(ebpfs);
    let running = ebpfs.len() + adopted_names.len();
    let failed_names: Vec<&str> = failed.iter().map(|f| f.monitor).collect();
    let metrics_task = metrics_listener.map(|listener| {
        info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics endpoint");
        let state = crate::output::metrics::State {
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
            pinned, // --- pin ---
        };
        tokio::spawn(crate::output::metrics::serve(listener, std::sync::Arc::new(state)))
    });
    // --- end operations ---
    return_startup_heap();
    let degraded = if failed.is_empty() {
        String::new()
    } else {
        format!(" ({} not running: {})", failed.len(), failed_names.join(", "))
    };
    // The start-up line: on stderr as it always was in text, a structured record in JSON.
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

    let mut summary = RunSummary::default();
    let mut stopping = false;
    // Batches held for a container's CRI names (see `hold_for_names`), oldest first.
    let mut held: std::collections::VecDeque<Held> = std::collections::VecDeque::new();
    // dns: events are put in kernel time order, then responses matched to queries; a periodic
    // tick reports the queries whose window ran out as `timeout` events (see crate::dns::order).
    let dns_on = options.monitors.iter().any(|m| m.name == "dns");
    let hold = crate::dns::order::hold_for(options.load.delivery.bound());
    let mut dns = crate::dns::Sequencer::new(options.decode.dns_timeout, crate::dns::DEFAULT_CAPACITY, hold);
    let mut ordered = Vec::new();
    dns.publish(&counters); // metrics: tapio_dns_inflight*
    let mut dns_tick = tokio::time::interval(std::time::Duration::from_millis(100));
    // The configuration file is watched as well as re-read on SIGHUP.
    let mut watch = options.reload.as_ref().and_then(|r| {
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
    });
    let mut reload_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = interrupt.recv(), if !stopping => stopping = true,
            _ = terminate.recv(), if !stopping => stopping = true,
            _ = hangup.recv() => {
                if let Some(config) = reload("SIGHUP", &mut options.decode, &mut dns, options.reload.as_ref(), &counters, &ebpfs) {
                    filters_reloaded(&mut filtering, config.filters);
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
                    if let Some(config) = reload("config file changed", &mut options.decode, &mut dns, options.reload.as_ref(), &counters, &ebpfs) {
                        filters_reloaded(&mut filtering, config.filters);
                    }
                }
            }
            _ = dns_tick.tick(), if dns_on => {
                // dns: what the watermark has passed comes out in kernel time order, with the
                // timeouts that fell due (crate::dns::order).
                dns.advance(crate::dns::monotonic_ns(), &mut ordered);
                let mut released: Vec<_> = ordered.drain(..).collect();
                if let Some(a) = attributor.as_mut() {
                    filtering.dirty |= name_containers(a, cri.as_mut()) && filtering.filters.by_cgroup();
                    released.iter_mut().for_each(|event| a.annotate(event));
                    released = hold_for_names(a, cri.as_ref(), &mut held, released, false);
                }
                filtering.retain(&mut released);
                if !released.is_empty() {
                    sink.send(released).await.map_err(output_failed)?;
                }
                dns.publish(&counters); // metrics: tapio_dns_inflight*
            }
            ready = streamer.ready() => ready.map_err(RunError::Reactor)?,
            // attribution: a held batch is looked at again soon (its names, or its deadline).
            _ = tokio::time::sleep(HOLD_POLL), if !held.is_empty() => {}
        }
        // Whatever woke the loop, take what is waiting (cheap when nothing is: two positions per
        // buffer are compared); on a stop signal this is the last pass. Records are decoded here
        // and written by the output thread, so a stalled reader never holds this loop.
        let decode = &options.decode;
        let taken = streamer.drain_each(|record| {
            // attribution: the watcher's records update the map and are not output.
            if let Some(mkdir) = monitors::cgroup_watch::decode(record) {
                match (mkdir, attributor.as_mut()) {
                    (Ok(mkdir), Some(a)) => {
                        // Only a pod's or container's cgroup changes the filters' cgroup sets.
                        filtering.dirty |= a.observe(&mkdir) && filtering.filters.by_cgroup();
                    }
                    (Ok(_), None) => {}
                    (Err(e), _) => {
                        summary.decode_errors += 1;
                        counters.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        warn!("{e}");
                    }
                }
                return Ok(());
            }
            // decode_all: an advanced batch record expands into its events.
            match events::decode_all(record, decode) {
                Ok(decoded) => {
                    // dns events wait for the watermark (crate::dns::order); the rest pass.
                    for event in decoded {
                        dns.push(event, &mut ordered);
                    }
                }
                Err(e) => {
                    summary.decode_errors += 1;
                    counters.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!("{e}");
                }
            }
            Ok(())
        });
        let taken = taken.map_err(|source| RunError::Output { path: output_name.clone(), source })?;
        if taken > 0 {
            dns.advance(crate::dns::monotonic_ns(), &mut ordered);
        }
        let mut out: Vec<_> = ordered.drain(..).collect();
        // attribution: after the whole pass, so the announcement of a cgroup drained later in
        // the pass than its first event's record (another ring) is applied all the same.
        if let Some(a) = attributor.as_mut() {
            filtering.dirty |= name_containers(a, cri.as_mut()) && filtering.filters.by_cgroup();
            for event in out.iter_mut() {
                a.annotate(event);
            }
            out = hold_for_names(a, cri.as_ref(), &mut held, out, stopping);
        }
        // filters: after attribution, so names apply; the cgroup sets follow new cgroups.
        filtering.retain(&mut out);
        if filtering.dirty {
            filtering.sync(ebpfs.iter().map(|(n, e)| (*n, e)), attributor.as_ref());
        }
        if !out.is_empty() {
            sink.send(out).await.map_err(output_failed)?;
            dns.publish(&counters); // metrics: tapio_dns_inflight*
        }
        if stopping {
            break;
        }
    }
    // dns: the run is over and no record is on its way: release what the watermark still holds.
    dns.flush(crate::dns::monotonic_ns(), &mut ordered);
    let mut last: Vec<_> = ordered.drain(..).collect();
    if let Some(a) = attributor.as_mut() {
        filtering.dirty |= name_containers(a, cri.as_mut()) && filtering.filters.by_cgroup();
        last.iter_mut().for_each(|event| a.annotate(event));
        last = hold_for_names(a, cri.as_ref(), &mut held, last, true);
    }
    filtering.retain(&mut last);
    drop(cri);
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
    if let Some(a) = &attributor {
        let st = a.stats();
        info!(scanned = st.scanned, announced = st.announced, evicted = st.evicted, attributed = st.attributed, held = a.len(), "attribution");
    }
    drop(watcher);
    drop(held_links);
    drop(ebpfs);
    // --- pin: the pins keep programs attached after this process ---
    if let Some(dir) = &options.pin_path {
        crate::pin::report_kept(dir);
    }
    // --- end pin ---
    Ok(summary)
}

/// SIGHUP or a change of the watched file: re-reads the configuration file and applies what can
/// change without reloading any program (argv_max, dns_timeout_ms, and the advanced monitor's
/// sampling, dedup window, batch size and flush bound). An invalid file is refused and the running
/// values stay. `trigger` starts the log line.
fn reload(
    trigger: &str,
    decode: &mut DecodeOptions,
    dns: &mut crate::dns::Sequencer,
    source: Option<&crate::config::Reload>,
    counters: &crate::output::metrics::Counters,
    objects: &crate::output::metrics::SharedObjects,
) -> Option<crate::config::Config> {
    let Some(source) = source else {
        warn!("{trigger}: no --config file to re-read; ignored");
        return None;
    };
    match source.load() {
        Ok(config) => {
            decode.argv_max = config.argv_max;
            decode.dns_timeout = std::time::Duration::from_millis(config.dns_timeout_ms);
            dns.set_window(decode.dns_timeout);
            // --- advanced: sampling, dedup window, batch size and flush bound follow the file ---
            crate::config::reload_advanced(objects.iter().map(|(_, ebpf)| ebpf), &config);
            // --- end advanced ---
            counters.config_reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            info!(argv_max = config.argv_max, dns_timeout_ms = config.dns_timeout_ms, "{trigger}: configuration reloaded");
            Some(config)
        }
        Err(e) => {
            counters.config_reload_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            warn!("{trigger}: {e}; keeping the running configuration");
            None
        }
    }
}

/// A reload's filters: the agent applies them from the next event; the kernel maps are rewritten
/// in place after the current pass (no program is detached). Objects loaded without the kernel
/// filter cannot turn it on (its switch is read-only after load): the agent applies it there.
fn filters_reloaded(filtering: &mut crate::filter::Active, filters: crate::filter::Filters) {
    if filtering.filters == filters {
        return;
    }
    if !filtering.kernel_on && filters.any() {
        warn!("filters: the monitors were loaded without the kernel filter; the new filters apply in the agent until the next start");
    }
    info!(filters = ?filters, "filters: reloaded");
    filtering.filters = filters;
    filtering.dirty = true;
}
