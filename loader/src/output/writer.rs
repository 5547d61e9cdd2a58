//! The output writer: its own thread behind a bounded queue, so a stalled reader of stdout (or a
//! slow disk) never blocks the run loop, the metrics endpoint or `/healthz`.
//!
//! The run loop hands each batch of decoded events to [`OutputThread::send`], which never waits:
//! when the queue already holds its bound of events the batch is dropped and counted
//! (`tapio_output_dropped_total`), as the kernel counts what a full ring drops. The thread writes
//! JSON lines and flushes after each batch; a write error ends it, and the run loop learns of it
//! at its next send or at shutdown.

use std::{
    io::{self, Write},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread,
    time::Duration,
};

use crate::{events::Event, output::json::JsonLines, output::metrics::Counters};

/// Events the queue holds by default before batches are dropped (a few MB at most).
pub const DEFAULT_QUEUE_EVENTS: u64 = 16_384;

/// Why a batch could not be handed over.
#[derive(Debug)]
pub enum SendError {
    /// The writer thread stopped on this write error: the output is gone.
    Failed(io::Error),
}

/// The writer thread and its queue.
pub struct OutputThread {
    tx: Option<mpsc::Sender<Vec<Event>>>,
    /// The thread's last word: Ok at the end of the queue, or the write error that stopped it.
    done: mpsc::Receiver<io::Result<()>>,
    queued: Arc<AtomicU64>,
    bound: u64,
    counters: Arc<Counters>,
}

impl OutputThread {
    /// Starts the thread writing JSON lines to `out`; at most `bound` events wait in the queue.
    pub fn spawn(out: Box<dyn Write + Send>, bound: u64, counters: Arc<Counters>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Vec<Event>>();
        let (done_tx, done) = mpsc::channel();
        let queued = Arc::new(AtomicU64::new(0));
        let (q, c) = (queued.clone(), counters.clone());
        thread::Builder::new().name("tapio-output".into()).spawn(move || {
            let mut sink = JsonLines::new(out);
            let result = (|| {
                for batch in rx {
                    let n = batch.len() as u64;
                    for event in &batch {
                        sink.write(event)?;
                    }
                    sink.flush()?;
                    q.fetch_sub(n, Ordering::Relaxed);
                    c.output_queue_events.store(q.load(Ordering::Relaxed), Ordering::Relaxed);
                    c.events_written.fetch_add(n, Ordering::Relaxed);
                }
                Ok(())
            })();
            let _ = done_tx.send(result);
        })?;
        counters.output_queue_bound.store(bound, Ordering::Relaxed);
        Ok(Self { tx: Some(tx), done, queued, bound, counters })
    }

    /// Queues a batch without ever waiting. A batch that does not fit under the bound is dropped
    /// and counted; Err only once the thread has stopped on a write error.
    pub fn send(&mut self, batch: Vec<Event>) -> Result<(), SendError> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Ok(Err(e)) = self.done.try_recv() {
            return Err(SendError::Failed(e));
        }
        let n = batch.len() as u64;
        let queued = self.queued.load(Ordering::Relaxed);
        if queued + n > self.bound {
            let dropped = self.counters.output_dropped.fetch_add(n, Ordering::Relaxed) + n;
            // When the total crosses a power of two: a stalled reader must not flood the log too.
            let before = dropped - n;
            if before == 0 || before.ilog2() != dropped.ilog2() {
                tracing::warn!(dropped, queued, bound = self.bound, "output: queue full (reader of the output stalled?): events dropped");
            }
            return Ok(());
        }
        self.queued.fetch_add(n, Ordering::Relaxed);
        self.counters.output_queue_events.store(queued + n, Ordering::Relaxed);
        if let Some(tx) = &self.tx {
            if tx.send(batch).is_err() {
                return Err(SendError::Failed(self.error_or_gone()));
            }
        }
        Ok(())
    }

    fn error_or_gone(&self) -> io::Error {
        match self.done.recv_timeout(Duration::from_secs(1)) {
            Ok(Err(e)) => e,
            _ => io::Error::new(io::ErrorKind::BrokenPipe, "output thread ended"),
        }
    }

    /// Closes the queue and waits up to `timeout` for the thread to write what it holds. A
    /// stalled reader does not hold the shutdown: after `timeout` the rest is left (and said).
    pub fn finish(mut self, timeout: Duration) -> io::Result<()> {
        drop(self.tx.take());
        match self.done.recv_timeout(timeout) {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(queued = self.queued.load(Ordering::Relaxed), "output: not written within {timeout:?} of shutdown (reader stalled); left unwritten");
                Ok(())
            }
        }
    }
}
