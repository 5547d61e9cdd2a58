//! `tapio-load run`: load the chosen monitors, attach, drain their buffers into the output until
//! SIGINT or SIGTERM, then detach everything and return.

use std::{
    fs::File,
    io::{self, Write},
    path::PathBuf,
};

use aya::{
    maps::{MapData, RingBuf},
    Btf,
};
use thiserror::Error;
use tokio::{
    io::unix::AsyncFd,
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
    #[error("event loop: register ring buffer: {0}")]
    Reactor(#[source] io::Error),
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
pub async fn run(options: RunOptions) -> Result<RunSummary, RunError> {
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signal)?;

    let loaded = load_all(&options)?;
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

    // Each monitor's buffer is drained by its own task; batches meet here. On shutdown every
    // task drains its buffer one last time, so nothing emitted before the signal is lost.
    let (tx, mut rx) = mpsc::channel::<Vec<Vec<u8>>>(64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut ebpfs = Vec::new();
    let mut tasks = Vec::new();
    for m in loaded {
        let LoadedMonitor { spec, ebpf, events, .. } = m;
        ebpfs.push((spec.name, ebpf));
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, until it is dropped,
        // which happens only when this AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
            .map_err(|e| RunError::Reactor(e.into()))?;
        tasks.push(tokio::spawn(drain(fd, tx.clone(), stop_rx.clone())));
    }
    drop(tx);
    eprintln!("tapio-load: attached {} monitor(s); streaming events to {output_name}", ebpfs.len());

    let mut summary = RunSummary::default();
    let mut stopping = false;
    // dns: responses are matched to queries here, and a periodic tick reports the queries whose
    // window ran out as `timeout` events (see crate::dns).
    let dns_on = options.monitors.iter().any(|m| m.name == "dns");
    let mut dns = crate::dns::Correlator::new(options.decode.dns_timeout, crate::dns::DEFAULT_CAPACITY);
    let mut dns_tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = interrupt.recv(), if !stopping => { stopping = true; let _ = stop_tx.send(true); }
            _ = terminate.recv(), if !stopping => { stopping = true; let _ = stop_tx.send(true); }
            _ = dns_tick.tick(), if dns_on => {
                for event in dns.expire(crate::dns::monotonic_ns()) {
                    sink.write(&event).map_err(|source| RunError::Output { path: output_name.clone(), source })?;
                }
                sink.flush().map_err(|source| RunError::Output { path: output_name.clone(), source })?;
            }
            batch = rx.recv() => {
                // None: every drain task has finished its last pass.
                let Some(batch) = batch else { break };
                for record in &batch {
                    match events::decode(record, &options.decode) {
                        Ok(mut event) => {
                            dns.observe(&mut event);
                            sink.write(&event).map_err(|source| RunError::Output { path: output_name.clone(), source })?;
                        }
                        Err(e) => {
                            summary.decode_errors += 1;
                            warn!("{e}");
                        }
                    }
                }
                sink.flush().map_err(|source| RunError::Output { path: output_name.clone(), source })?;
            }
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    let _ = sink.flush();
    summary.written = sink.written();
    for (name, ebpf) in &ebpfs {
        let emitted = monitors::stat(ebpf, 0).unwrap_or(0);
        let lost = monitors::stat(ebpf, 1).unwrap_or(0);
        info!(monitor = name, emitted, lost, "detaching");
    }
    drop(ebpfs);
    Ok(summary)
}

/// Drains one ring buffer until told to stop, then once more, and hands batches to the writer.
async fn drain(mut fd: AsyncFd<RingBuf<MapData>>, tx: mpsc::Sender<Vec<Vec<u8>>>, mut stop: watch::Receiver<bool>) {
    loop {
        let stopping = tokio::select! {
            ready = fd.readable_mut() => {
                let Ok(mut guard) = ready else { return };
                guard.clear_ready();
                false
            }
            _ = stop.changed() => true,
        };
        // Read after clearing readiness: a record committed meanwhile re-arms the fd.
        let ring = fd.get_mut();
        let mut batch = Vec::new();
        while let Some(item) = ring.next() {
            batch.push(item.to_vec());
        }
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            return;
        }
        if stopping {
            return;
        }
    }
}
