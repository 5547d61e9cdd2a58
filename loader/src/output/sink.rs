//! Sinks: where decoded events go, each behind a bounded queue of its own, fed from one fan-out.
//!
//! The run loop hands every batch, after every filter, to [`Fanout::send`]: the one place events
//! leave the loop, so every sink sees the same events in the same order. The batch is shared
//! (`Arc`), not copied, between the sinks. Each sink has a thread of its own behind a queue bounded
//! in events; when it is full the sink's `when_full` decides: `drop` drops the batch for that sink
//! alone and counts it, `block` makes the run loop wait for room (the kernel's buffers then fill
//! and count what they drop, as they do for a slow reader). A stop signal ends a wait, so SIGTERM
//! is never held by a sink that cannot send.
//!
//! Three kinds: `stdout` and `file` write JSON lines ([`crate::output::json`],
//! [`crate::output::file`]), `otlp` sends OTLP logs over gRPC ([`crate::output::otlp`]).

use std::{
    collections::VecDeque,
    io::{self, Write},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Condvar, Mutex,
    },
    thread,
    time::Duration,
};

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::{
    events::Event,
    output::{file::RotatingFile, json::JsonLines, metrics::Counters, otlp::OtlpOptions},
};

/// Events a sink's queue holds by default before `when_full` applies (a few MB at most).
pub const DEFAULT_QUEUE_EVENTS: u64 = 16_384;

/// What a sink does with a batch that does not fit in its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Drop the batch for this sink and count it (`tapio_sink_dropped_total`). The run loop never
    /// waits on this sink.
    #[default]
    Drop,
    /// Wait for room: the run loop, and so every sink, waits for this one; the kernel's buffers
    /// then drop and count what overflows. A stop signal ends the wait.
    Block,
}

/// Where a sink writes.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// JSON lines on standard output.
    Stdout,
    /// JSON lines to a file, rotated at `max_bytes` (0: never) keeping `keep` rotated files.
    /// `truncate` is the legacy `output = "<path>"`: the file is emptied at start and never
    /// rotated, exactly as before sinks existed.
    File { path: PathBuf, max_bytes: u64, keep: usize, truncate: bool },
    /// OTLP logs over gRPC.
    Otlp(OtlpOptions),
}

impl SinkKind {
    /// The `kind` name of the configuration and of the metrics' `kind` label.
    pub fn name(&self) -> &'static str {
        match self {
            SinkKind::Stdout => "stdout",
            SinkKind::File { .. } => "file",
            SinkKind::Otlp(_) => "otlp",
        }
    }
}

/// One configured sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    /// The metrics' `sink` label and the logs' name: `name` from the configuration, else the kind
    /// (numbered when the kind repeats).
    pub name: String,
    pub kind: SinkKind,
    /// At most this many events wait in the sink's queue.
    pub queue_events: u64,
    pub when_full: WhenFull,
}

impl SinkSpec {
    /// The default and the legacy `output` key: one JSON-lines sink that drops when full.
    pub fn legacy(file: Option<PathBuf>, queue_events: u64) -> Self {
        match file {
            None => SinkSpec { name: "stdout".into(), kind: SinkKind::Stdout, queue_events, when_full: WhenFull::Drop },
            Some(path) => SinkSpec {
                name: path.display().to_string(),
                kind: SinkKind::File { path, max_bytes: 0, keep: 0, truncate: true },
                queue_events,
                when_full: WhenFull::Drop,
            },
        }
    }
}

/// One sink's counters, published as `tapio_sink_*{sink, kind}`.
#[derive(Debug, Default)]
pub struct SinkCounters {
    pub name: String,
    pub kind: &'static str,
    /// Events waiting in the queue now, and its bound.
    pub queued: AtomicU64,
    pub bound: AtomicU64,
    /// Events the sink wrote (stdout, file) or the receiver accepted (otlp).
    pub sent: AtomicU64,
    /// Events dropped: the queue was full (`drop`), or the receiver refused them for good.
    pub dropped: AtomicU64,
    /// Export attempts that failed and were retried (otlp).
    pub retries: AtomicU64,
}

/// What a sink's thread does with each batch it takes from the queue.
pub trait Backend: Send {
    /// Writes or sends a batch; an error stops the sink (its thread ends with it). Updates
    /// `counters.sent` (and `dropped` for what it gives up on).
    fn write(&mut self, batch: &[Event], counters: &SinkCounters) -> io::Result<()>;
    /// How long the thread may wait for a batch before calling [`Backend::tick`].
    fn tick_interval(&self) -> Option<Duration> {
        None
    }
    /// Called when no batch came within [`Backend::tick_interval`] (an OTLP batch due by time).
    fn tick(&mut self, _counters: &SinkCounters) -> io::Result<()> {
        Ok(())
    }
    /// The queue is closed and empty: send what is held.
    fn close(&mut self, _counters: &SinkCounters) -> io::Result<()> {
        Ok(())
    }
}

/// JSON lines to any writer: stdout, or the legacy output file.
struct Lines<W: Write>(JsonLines<W>);

impl<W: Write + Send> Backend for Lines<W> {
    fn write(&mut self, batch: &[Event], counters: &SinkCounters) -> io::Result<()> {
        for event in batch {
            self.0.write(event)?;
        }
        self.0.flush()?;
        counters.sent.fetch_add(batch.len() as u64, Relaxed);
        Ok(())
    }
}

impl Backend for RotatingFile {
    fn write(&mut self, batch: &[Event], counters: &SinkCounters) -> io::Result<()> {
        self.write_batch(batch)?;
        counters.sent.fetch_add(batch.len() as u64, Relaxed);
        Ok(())
    }
}

/// The queue between the run loop and a sink's thread.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when a batch is queued or the queue closes.
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    batches: VecDeque<Arc<Vec<Event>>>,
    events: u64,
    closed: bool,
}

/// Why a batch could not be handed over.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink's thread stopped on this error: the sink is gone.
    #[error("sink {sink}: {source}")]
    Failed {
        sink: String,
        #[source]
        source: io::Error,
    },
    #[error("sink {sink}: open: {source}")]
    Open {
        sink: String,
        #[source]
        source: io::Error,
    },
}

/// One running sink: its queue, its thread and its counters.
pub struct Sink {
    spec: SinkSpec,
    queue: Arc<Queue>,
    /// The room a `block` sender waits for: signalled after every batch the thread takes.
    room: Arc<tokio::sync::Notify>,
    /// The thread's last word: Ok at the end of the queue, or the error that stopped it.
    done: std::sync::mpsc::Receiver<io::Result<()>>,
    counters: Arc<SinkCounters>,
}

impl Sink {
    /// Opens the sink's destination and starts its thread.
    pub fn start(spec: SinkSpec) -> Result<Self, SinkError> {
        let name = spec.name.clone();
        let open_err = |source| SinkError::Open { sink: name.clone(), source };
        let backend: Box<dyn Backend> = match &spec.kind {
            SinkKind::Stdout => Box::new(Lines(JsonLines::new(io::stdout()))),
            SinkKind::File { path, truncate: true, .. } => {
                Box::new(Lines(JsonLines::new(std::fs::File::create(path).map_err(open_err)?)))
            }
            SinkKind::File { path, max_bytes, keep, truncate: false } => {
                Box::new(RotatingFile::open(path.clone(), *max_bytes, *keep).map_err(open_err)?)
            }
            SinkKind::Otlp(options) => Box::new(crate::output::otlp::OtlpBackend::new(options.clone()).map_err(open_err)?),
        };
        Self::with_backend(spec, backend).map_err(open_err)
    }

    /// Starts the thread over any backend (tests use their own).
    pub fn with_backend(spec: SinkSpec, mut backend: Box<dyn Backend>) -> io::Result<Self> {
        let counters = Arc::new(SinkCounters { name: spec.name.clone(), kind: spec.kind.name(), ..SinkCounters::default() });
        counters.bound.store(spec.queue_events, Relaxed);
        let queue = Arc::new(Queue::default());
        let room = Arc::new(tokio::sync::Notify::new());
        let (done_tx, done) = std::sync::mpsc::channel();
        let (q, r, c) = (queue.clone(), room.clone(), counters.clone());
        thread::Builder::new().name(format!("tapio-sink-{}", spec.kind.name())).spawn(move || {
            let result = (|| {
                loop {
                    let next = {
                        let mut state = q.state.lock().expect("sink queue lock");
                        loop {
                            if let Some(batch) = state.batches.pop_front() {
                                state.events -= batch.len() as u64;
                                c.queued.store(state.events, Relaxed);
                                break Some(batch);
                            }
                            if state.closed {
                                break None;
                            }
                            match backend.tick_interval() {
                                None => state = q.ready.wait(state).expect("sink queue lock"),
                                Some(interval) => {
                                    let (s, timeout) = q.ready.wait_timeout(state, interval).expect("sink queue lock");
                                    state = s;
                                    if timeout.timed_out() && state.batches.is_empty() && !state.closed {
                                        drop(state);
                                        backend.tick(&c)?;
                                        state = q.state.lock().expect("sink queue lock");
                                    }
                                }
                            }
                        }
                    };
                    r.notify_one();
                    match next {
                        Some(batch) => backend.write(&batch, &c)?,
                        None => return backend.close(&c),
                    }
                }
            })();
            let _ = done_tx.send(result);
        })?;
        Ok(Self { spec, queue, room, done, counters })
    }

    pub fn counters(&self) -> &Arc<SinkCounters> {
        &self.counters
    }

    /// Offers a batch: queued when it fits (or the queue is empty: a batch larger than the bound
    /// is never starved), else dropped and counted; with `may_wait`, Ok(false) instead, for the
    /// caller to wait for room and offer again. Err once the sink's thread stopped on an error.
    fn offer(&self, batch: &Arc<Vec<Event>>, may_wait: bool) -> Result<bool, SinkError> {
        if let Ok(Err(source)) = self.done.try_recv() {
            return Err(SinkError::Failed { sink: self.spec.name.clone(), source });
        }
        let n = batch.len() as u64;
        let mut state = self.queue.state.lock().expect("sink queue lock");
        if state.events + n <= self.spec.queue_events || state.batches.is_empty() {
            state.batches.push_back(batch.clone());
            state.events += n;
            self.counters.queued.store(state.events, Relaxed);
            self.queue.ready.notify_one();
            return Ok(true);
        }
        if may_wait {
            return Ok(false);
        }
        let queued = state.events;
        drop(state);
        let dropped = self.counters.dropped.fetch_add(n, Relaxed) + n;
        // When the total crosses a power of two: a stalled sink must not flood the log too.
        let before = dropped - n;
        if before == 0 || before.ilog2() != dropped.ilog2() {
            tracing::warn!(sink = %self.spec.name, dropped, queued, bound = self.spec.queue_events, "output: queue full (reader of the output stalled?): events dropped");
        }
        Ok(true)
    }

    /// Closes the queue and waits until `deadline` for the thread to write what it holds.
    fn finish(self, deadline: std::time::Instant) -> Result<(), SinkError> {
        {
            let mut state = self.queue.state.lock().expect("sink queue lock");
            state.closed = true;
            self.queue.ready.notify_one();
        }
        match self.done.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(result) => result.map_err(|source| SinkError::Failed { sink: self.spec.name.clone(), source }),
            Err(_) => {
                tracing::warn!(sink = %self.spec.name, queued = self.counters.queued.load(Relaxed), "output: not written within the shutdown grace (reader or receiver stalled); left unwritten");
                Ok(())
            }
        }
    }
}

/// The one point where events leave the run loop: every sink gets every batch.
pub struct Fanout {
    sinks: Vec<Sink>,
    counters: Arc<Counters>,
    /// SIGINT and SIGTERM, so that a `block` wait ends on a stop (tokio delivers each signal to
    /// every listener, so the run loop still sees it).
    stop: Option<(Signal, Signal)>,
    stopping: bool,
}

impl Fanout {
    /// Starts every sink; the first is the one the legacy `tapio_output_*` and
    /// `tapio_events_written_total` families describe.
    pub fn start(specs: Vec<SinkSpec>, counters: Arc<Counters>) -> Result<Self, SinkError> {
        let sinks = specs.into_iter().map(Sink::start).collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_sinks(sinks, counters))
    }

    /// A fan-out over sinks already started.
    pub fn from_sinks(sinks: Vec<Sink>, counters: Arc<Counters>) -> Self {
        *counters.sinks.lock().expect("sink counters lock") = sinks.iter().map(|s| s.counters.clone()).collect();
        if let Some(first) = sinks.first() {
            counters.output_queue_bound.store(first.spec.queue_events, Relaxed);
        }
        let stop = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(i), Ok(t)) => Some((i, t)),
            _ => None,
        };
        Self { sinks, counters, stop, stopping: false }
    }

    /// The sinks' names, for the start-up line.
    pub fn describe(&self) -> String {
        self.sinks.iter().map(|s| s.spec.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// Hands a batch to every sink. Never waits on a `drop` sink; waits for room in a `block`
    /// sink until a stop signal, after which a full `block` sink drops like a `drop` sink. Err
    /// once a sink has stopped on an error.
    pub async fn send(&mut self, batch: Vec<Event>) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = Arc::new(batch);
        for i in 0..self.sinks.len() {
            loop {
                let sink = &self.sinks[i];
                let may_wait = sink.spec.when_full == WhenFull::Block && !self.stopping;
                let room = sink.room.clone();
                let notified = room.notified();
                if sink.offer(&batch, may_wait)? {
                    break;
                }
                let stop = async {
                    match self.stop.as_mut() {
                        Some((i, t)) => tokio::select! {
                            _ = i.recv() => (),
                            _ = t.recv() => (),
                        },
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop => self.stopping = true,
                }
            }
        }
        self.publish();
        Ok(())
    }

    /// The legacy families (`tapio_output_*`, `tapio_events_written_total`) follow the first sink.
    fn publish(&self) {
        if let Some(first) = self.sinks.first() {
            let c = &first.counters;
            self.counters.events_written.store(c.sent.load(Relaxed), Relaxed);
            self.counters.output_queue_events.store(c.queued.load(Relaxed), Relaxed);
            self.counters.output_dropped.store(c.dropped.load(Relaxed), Relaxed);
        }
    }

    /// Closes every queue and gives the sinks until `timeout` to write what they hold. The first
    /// error is returned once every sink has had its chance.
    pub fn finish(mut self, timeout: Duration) -> Result<u64, SinkError> {
        let deadline = std::time::Instant::now() + timeout;
        let first = self.sinks.first().map(|s| s.counters.clone());
        let mut result = Ok(());
        for sink in std::mem::take(&mut self.sinks) {
            let r = sink.finish(deadline);
            if result.is_ok() {
                result = r;
            }
        }
        let written = first.map_or(0, |c| c.sent.load(Relaxed));
        self.counters.events_written.store(written, Relaxed);
        result.map(|()| written)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::events::{process::ProcessBody, Body};

    pub(crate) fn event(i: u32) -> Event {
        Event {
            ts_ns: u64::from(i),
            monitor: "process",
            event: "fork",
            pid: i,
            tgid: i,
            comm: "t".into(),
            cgroup_id: 1,
            uid: 0,
            container: None,
            body: Body::Process(ProcessBody::Fork { ppid: 1, child_tgid: i, pid_ns: 0 }),
        }
    }

    /// A backend that holds every batch until released, and records what it got.
    struct Gate {
        open: Arc<AtomicBool>,
        got: Arc<Mutex<Vec<u32>>>,
    }

    impl Backend for Gate {
        fn write(&mut self, batch: &[Event], counters: &SinkCounters) -> io::Result<()> {
            while !self.open.load(Relaxed) {
                thread::sleep(Duration::from_millis(2));
            }
            self.got.lock().unwrap().extend(batch.iter().map(|e| e.pid));
            counters.sent.fetch_add(batch.len() as u64, Relaxed);
            Ok(())
        }
    }

    fn spec(name: &str, bound: u64, when_full: WhenFull) -> SinkSpec {
        SinkSpec { name: name.into(), kind: SinkKind::Stdout, queue_events: bound, when_full }
    }

    /// A stalled `drop` sink drops and counts what does not fit, while the other sink gets every
    /// event; a stalled `block` sink makes the sender wait and loses nothing.
    #[tokio::test(flavor = "current_thread")]
    async fn each_sink_has_its_queue_and_its_choice() {
        let counters = Arc::new(Counters::default());
        let (stalled, flowing) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(true)));
        let (got_stalled, got_flowing) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let a = Sink::with_backend(spec("a", 10, WhenFull::Drop), Box::new(Gate { open: stalled.clone(), got: got_stalled.clone() })).unwrap();
        let b = Sink::with_backend(spec("b", 10, WhenFull::Drop), Box::new(Gate { open: flowing.clone(), got: got_flowing.clone() })).unwrap();
        let mut fanout = Fanout::from_sinks(vec![a, b], counters.clone());
        for i in 0..20 {
            fanout.send(vec![event(2 * i), event(2 * i + 1)]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ca = fanout.sinks[0].counters.clone();
        stalled.store(true, Relaxed);
        fanout.finish(Duration::from_secs(5)).unwrap();
        assert_eq!(*got_flowing.lock().unwrap(), (0..40).collect::<Vec<_>>());
        let got = got_stalled.lock().unwrap().len() as u64;
        assert_eq!(got + ca.dropped.load(Relaxed), 40, "every event is sent or counted dropped");
        assert!(ca.dropped.load(Relaxed) >= 20, "a stalled sink with 10 places dropped {}", ca.dropped.load(Relaxed));
        assert_eq!(counters.output_dropped.load(Relaxed), ca.dropped.load(Relaxed));

        let open = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(Vec::new()));
        let c = Sink::with_backend(spec("c", 4, WhenFull::Block), Box::new(Gate { open: open.clone(), got: got.clone() })).unwrap();
        let mut fanout = Fanout::from_sinks(vec![c], counters);
        let opener = {
            let open = open.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(300));
                open.store(true, Relaxed);
            })
        };
        let started = std::time::Instant::now();
        for i in 0..20 {
            fanout.send(vec![event(i)]).await.unwrap();
        }
        assert!(started.elapsed() >= Duration::from_millis(250), "block mode did not wait for the stalled sink");
        opener.join().unwrap();
        fanout.finish(Duration::from_secs(5)).unwrap();
        assert_eq!(*got.lock().unwrap(), (0..20).collect::<Vec<_>>(), "block mode lost events");
    }
}
