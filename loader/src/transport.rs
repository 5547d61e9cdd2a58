//! Reading records out of a monitor's `events` map, whichever transport the object was built for.
//!
//! A ring buffer (5.8+) is one shared buffer; a perf event array (4.4+) is one buffer per CPU,
//! each of which must be opened before the programs run, or their output fails and is counted
//! as lost. [`EventSource`] hides the difference: `next()` for a synchronous drain, and
//! [`EventSource::into_buffers`] for one pollable fd per buffer in the async run loop.

use std::{
    collections::VecDeque,
    os::fd::{AsRawFd, RawFd},
};

use aya::maps::{
    perf::{PerfEventArray, PerfEventArrayBuffer},
    Map, MapData, RingBuf,
};
use bytes::BytesMut;
use thiserror::Error;

use crate::bundle::Transport;

/// Pages per CPU for perf buffers (a power of two): 64 KiB with 4 KiB pages.
const PERF_PAGES: usize = 16;
/// Largest record any monitor sends, rounded up: what one perf read slot must hold.
const MAX_RECORD: usize = 4096;

/// The `events` map could not be turned into readable buffers.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("{transport} map: {detail}")]
    Map { transport: Transport, detail: String },
    #[error("perf buffer for cpu {cpu}: {detail}")]
    PerfOpen { cpu: u32, detail: String },
    #[error("online cpus: {0}")]
    Cpus(String),
}

/// One pollable buffer: the ring, or one CPU's perf buffer.
pub enum EventBuffer {
    Ring(RingBuf<MapData>),
    Perf(PerfEventArrayBuffer<MapData>),
    /// A ring adopted from pins (crate::pin): read by our own consumer, see its docs.
    Pinned(crate::pin::PinnedRing),
}

impl AsRawFd for EventBuffer {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Self::Ring(r) => r.as_raw_fd(),
            Self::Perf(p) => p.as_raw_fd(),
            Self::Pinned(r) => r.as_raw_fd(),
        }
    }
}

impl EventBuffer {
    /// Moves every waiting record into `out`; returns how many the kernel reported lost.
    pub fn drain(&mut self, out: &mut Vec<Vec<u8>>) -> u64 {
        match self {
            Self::Ring(ring) => {
                while let Some(item) = ring.next() {
                    out.push(item.to_vec());
                }
                0
            }
            Self::Perf(buf) => {
                let mut lost = 0;
                let mut slots: Vec<BytesMut> = (0..16).map(|_| BytesMut::with_capacity(MAX_RECORD)).collect();
                while buf.readable() {
                    match buf.read_events(&mut slots) {
                        Ok(events) => {
                            lost += events.lost as u64;
                            out.extend(slots[..events.read].iter_mut().map(|b| {
                                let record = b.to_vec();
                                b.clear();
                                record
                            }));
                        }
                        Err(e) => {
                            tracing::warn!("perf buffer read: {e}");
                            break;
                        }
                    }
                }
                lost
            }
            Self::Pinned(ring) => {
                ring.drain(out);
                0
            }
        }
    }
}

/// Every buffer of one monitor's `events` map.
pub struct EventSource {
    pub transport: Transport,
    buffers: Vec<EventBuffer>,
    pending: VecDeque<Vec<u8>>,
    /// Records the kernel reported lost (perf only; the ring counts its losses in `stats`).
    pub lost: u64,
}

impl EventSource {
    /// Opens the map as the transport it was built with; for perf, one buffer per online CPU.
    pub fn open(map: Map, transport: Transport) -> Result<Self, TransportError> {
        let map_err = |detail: String| TransportError::Map { transport, detail };
        let buffers = match transport {
            Transport::Ringbuf => vec![EventBuffer::Ring(RingBuf::try_from(map).map_err(|e| map_err(e.to_string()))?)],
            Transport::Perf => {
                let mut array = PerfEventArray::try_from(map).map_err(|e| map_err(e.to_string()))?;
                let cpus = aya::util::online_cpus().map_err(|(what, e)| TransportError::Cpus(format!("{what}: {e}")))?;
                cpus.into_iter()
                    .map(|cpu| {
                        array
                            .open(cpu, Some(PERF_PAGES))
                            .map(EventBuffer::Perf)
                            .map_err(|e| TransportError::PerfOpen { cpu, detail: e.to_string() })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(Self { transport, buffers, pending: VecDeque::new(), lost: 0 })
    }

    /// A source reading one ring buffer adopted from its pin (crate::pin).
    pub fn from_pinned_ring(ring: crate::pin::PinnedRing) -> Self {
        Self { transport: Transport::Ringbuf, buffers: vec![EventBuffer::Pinned(ring)], pending: VecDeque::new(), lost: 0 }
    }

    /// The next waiting record, without blocking.
    #[allow(clippy::should_implement_trait, reason = "mirrors RingBuf::next, which callers used before")]
    pub fn next(&mut self) -> Option<Vec<u8>> {
        if self.pending.is_empty() {
            let mut out = Vec::new();
            for b in &mut self.buffers {
                self.lost += b.drain(&mut out);
            }
            self.pending.extend(out);
        }
        self.pending.pop_front()
    }

    /// Blocks until a record is waiting in some buffer or `timeout` passes; true if one is.
    ///
    /// For callers that drain synchronously and must wait for an event the kernel emits
    /// asynchronously (a TCP state change completed in softirq after the syscall returned):
    /// they wait on the buffers' own readiness rather than guessing a delay.
    pub fn wait(&self, timeout: std::time::Duration) -> std::io::Result<bool> {
        if !self.pending.is_empty() {
            return Ok(true);
        }
        let mut fds: Vec<libc::pollfd> =
            self.buffers.iter().map(|b| libc::pollfd { fd: b.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: fds is a valid array of fds.len() pollfd entries for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        match n {
            n if n < 0 => Err(std::io::Error::last_os_error()),
            n => Ok(n > 0),
        }
    }

    /// The buffers, for one async task each.
    pub fn into_buffers(self) -> Vec<EventBuffer> {
        self.buffers
    }
}
