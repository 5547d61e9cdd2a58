//! Reading records out of a monitor's `events` map, whichever transport the object was built for,
//! under the delivery policy chosen at load time.
//!
//! A ring buffer (5.8+) is one shared buffer; a perf event array (4.4+) is one buffer per CPU,
//! each of which must be opened before the programs run, or their output fails and is counted
//! as lost. [`EventSource`] hides the difference: `next()` for a synchronous drain, `wait()` to
//! block until a record is there, and [`Streamer`] drains every source for the run loop.
//!
//! # Delivery
//!
//! Waking the reader costs the kernel far more than writing the record (about 4 µs against
//! 0.2 µs for an 8-byte ring record on the development machine). Under [`DeliveryPolicy::Batched`],
//! the default, records are written without a wake-up but for the one that fills a quarter of
//! the buffer (ring: `BPF_RB_NO_WAKEUP`, and `BPF_RB_FORCE_WAKEUP` for the record that takes the
//! unread data across `tapio_wakeup_bytes`; perf: a byte watermark), and the reader drains on a timer that starts at [`DRAIN_FIRST`] after data,
//! doubles while the buffers stay empty, and stops doubling [`TIMER_SLACK`] short of the bound
//! ([`Delivery::bound`]): a record emitted just before the node goes quiet waits at most the
//! bound. One timer serves every monitor ([`Streamer`]). This is the scheme of
//! Falco's modern_bpf engine (500 µs backing off to 30 ms) and of the kernel's `ringbuf_bench`
//! selftest (wake-up past a data threshold). [`DeliveryPolicy::Immediate`] keeps a wake-up per
//! record (the kernel's default for the ring, `wakeup_events = 1` for perf) and no timer: the
//! behaviour before delivery policies existed.
//!
//! Because a record may arrive without a wake-up, nothing here trusts fd readiness alone: both
//! buffers are mapped, and "is there data" is a comparison of the producer and consumer positions.

pub mod perf;
pub mod ring;

use std::{
    collections::VecDeque,
    fmt, io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    str::FromStr,
    task::Poll,
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData};
use serde::Serialize;
use thiserror::Error;
use tokio::io::unix::AsyncFd;

use crate::bundle::Transport;

use self::{
    perf::{PerfBuffer, PerfWakeup},
    ring::RingReader,
};

/// The `events` ring's size in the objects (probes/include/transport.bpf.h); `ring_size` changes it.
pub const DEFAULT_RING_SIZE: u32 = 256 * 1024;
/// Pages per CPU for perf buffers (a power of two): 64 KiB with 4 KiB pages.
const PERF_PAGES: usize = 16;
/// Under `batched`, a writer wakes the reader once the unread data reaches 1/WAKEUP_FRACTION of
/// the buffer: late enough that wake-ups are rare, early enough that the rest of the buffer
/// absorbs the reader's wake-up latency.
const WAKEUP_FRACTION: u64 = 4;
/// The drain timer's first interval after data arrived.
pub const DRAIN_FIRST: Duration = Duration::from_micros(500);
/// How late the drain may come: tokio's timer wheel ticks every millisecond and rounds a deadline
/// up to the next tick (measured: a 9 ms sleep took up to 10.1 ms on the loaded development VM),
/// and the reader must then be scheduled. The timer's longest interval is the bound minus this, so
/// a record waits at most the bound, not the bound plus the timer's lateness.
pub const TIMER_SLACK: Duration = Duration::from_millis(2);
/// The default bound (`delivery_bound_ms`).
pub const DEFAULT_BOUND: Duration = Duration::from_millis(10);
/// How long [`EventSource::wait`] blocks in one poll before it looks at the positions again.
const WAIT_SLICE_MS: libc::c_int = 1;

/// When records wake the reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryPolicy {
    /// No wake-up per record: one past a quarter of the buffer, and the reader's backoff timer.
    #[default]
    Batched,
    /// A wake-up per record and no drain timer, as before delivery policies existed.
    Immediate,
}

impl DeliveryPolicy {
    /// Every policy, by name.
    pub const ALL: &'static [DeliveryPolicy] = &[Self::Batched, Self::Immediate];

    pub fn name(self) -> &'static str {
        match self {
            Self::Batched => "batched",
            Self::Immediate => "immediate",
        }
    }
}

impl fmt::Display for DeliveryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A delivery policy name that is not one.
#[derive(Debug, Error)]
#[error("expected `batched` or `immediate`, got `{0}`")]
pub struct UnknownPolicy(String);

impl FromStr for DeliveryPolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.iter().copied().find(|p| p.name() == s).ok_or_else(|| UnknownPolicy(s.to_owned()))
    }
}

/// The delivery policy in force and the latency bound of its reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub policy: DeliveryPolicy,
    /// The drain timer's longest interval, in ms: under `batched`, the longest a record waits in
    /// the buffer before the reader takes it (the timer's own slack aside).
    pub bound_ms: u64,
}

impl Default for Delivery {
    fn default() -> Self {
        Self { policy: DeliveryPolicy::Batched, bound_ms: DEFAULT_BOUND.as_millis() as u64 }
    }
}

impl Delivery {
    pub fn bound(&self) -> Duration {
        Duration::from_millis(self.bound_ms)
    }

    /// `tapio_wakeup_bytes` for a ring of `ring_size` bytes (0: the kernel's wake-up per record).
    pub fn ring_wakeup_bytes(&self, ring_size: u32) -> u64 {
        match self.policy {
            DeliveryPolicy::Batched => u64::from(ring_size) / WAKEUP_FRACTION,
            DeliveryPolicy::Immediate => 0,
        }
    }

    /// The wake-up of a perf buffer of `bytes` bytes.
    pub fn perf_wakeup(&self, bytes: usize) -> PerfWakeup {
        match self.policy {
            DeliveryPolicy::Batched => PerfWakeup::Bytes((bytes as u64 / WAKEUP_FRACTION) as u32),
            DeliveryPolicy::Immediate => PerfWakeup::EverySample,
        }
    }

    /// One line for `plan` and the start-up log.
    pub fn describe(&self, transport: Transport) -> String {
        let wake = match (self.policy, transport) {
            (DeliveryPolicy::Batched, Transport::Ringbuf) => {
                format!("records wake the reader only past 1/{WAKEUP_FRACTION} of the ring (BPF_RB_NO_WAKEUP below)")
            }
            (DeliveryPolicy::Batched, Transport::Perf) => {
                format!("perf buffers wake the reader every 1/{WAKEUP_FRACTION} of their size (byte watermark)")
            }
            (DeliveryPolicy::Immediate, _) => "every record wakes the reader".to_owned(),
        };
        let timer = match DrainTimer::new(self) {
            Some(t) => format!("drained every {}-{} ms (backoff while idle)", DRAIN_FIRST.as_secs_f64() * 1e3, t.max.as_secs_f64() * 1e3),
            None => "no drain timer".to_owned(),
        };
        format!("{} (bound {} ms): {wake}, {timer}", self.policy, self.bound_ms)
    }
}

/// The reader's drain timer under `batched`: [`DRAIN_FIRST`] after data, doubling while the
/// buffers stay empty, never past the bound less [`TIMER_SLACK`].
#[derive(Debug, Clone)]
pub struct DrainTimer {
    max: Duration,
    next: Duration,
}

impl DrainTimer {
    /// The timer `delivery` needs; None under `immediate`, whose records each wake the reader
    /// (the kernel's own guarantee, as before delivery policies existed: no timer, no idle cost).
    pub fn new(delivery: &Delivery) -> Option<Self> {
        match delivery.policy {
            DeliveryPolicy::Batched => {
                Some(Self { max: delivery.bound().saturating_sub(TIMER_SLACK).max(DRAIN_FIRST), next: DRAIN_FIRST })
            }
            DeliveryPolicy::Immediate => None,
        }
    }

    /// How long to sleep before the next drain.
    pub fn interval(&self) -> Duration {
        self.next
    }

    /// After a drain: back to the first interval if it found records, else double up to the bound.
    pub fn drained(&mut self, found: bool) {
        self.next = if found { DRAIN_FIRST } else { (self.next * 2).min(self.max) };
    }
}

/// The `events` map could not be turned into readable buffers.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("{transport} map: a {found} map, not the {transport} map this object was built with")]
    MapType { transport: Transport, found: String },
    #[error(transparent)]
    Ring(#[from] ring::RingError),
    #[error("perf buffer: {0}")]
    Perf(#[from] perf::PerfError),
    #[error("online cpus: {what}: {source}")]
    Cpus {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("epoll: {0}")]
    Epoll(#[source] io::Error),
}

/// One buffer: the ring, or one CPU's perf buffer.
enum EventBuffer {
    Ring(RingReader),
    Perf(PerfBuffer),
}

impl EventBuffer {
    fn has_data(&self) -> bool {
        match self {
            Self::Ring(r) => r.has_data(),
            Self::Perf(p) => p.has_data(),
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Self::Ring(r) => r.as_raw_fd(),
            Self::Perf(p) => p.as_raw_fd(),
        }
    }

    /// Hands every waiting record to `f` in place; returns how many, and how many the kernel
    /// reported lost (perf).
    fn drain_each<E>(&mut self, f: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(usize, u64), E> {
        match self {
            Self::Ring(ring) => ring.drain_each(f).map(|n| (n, 0)),
            Self::Perf(buf) => buf.drain_each(f),
        }
    }
}

/// Every buffer of one monitor's `events` map, behind one epoll fd that is readable when any
/// buffer's wake-up came.
pub struct EventSource {
    pub transport: Transport,
    buffers: Vec<EventBuffer>,
    epoll: OwnedFd,
    pending: VecDeque<Vec<u8>>,
    /// Records the kernel reported lost (perf only; the ring counts its losses in `stats`).
    pub lost: u64,
    /// perf: the array the buffers' fds were stored in, kept open as long as they are.
    _array: Option<MapData>,
}

impl EventSource {
    /// Opens the map as the transport it was built with; for perf, one buffer per online CPU,
    /// whose wake-ups follow `delivery`.
    pub fn open(map: Map, transport: Transport, delivery: &Delivery) -> Result<Self, TransportError> {
        match (transport, map) {
            (Transport::Ringbuf, Map::RingBuf(data)) => Self::from_ring(RingReader::new(data)?),
            (Transport::Perf, Map::PerfEventArray(array)) => {
                let cpus = aya::util::online_cpus().map_err(|(what, source)| TransportError::Cpus { what, source })?;
                // SAFETY: sysconf has no preconditions.
                let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
                let wakeup = delivery.perf_wakeup(PERF_PAGES * page);
                let buffers = cpus
                    .into_iter()
                    .map(|cpu| PerfBuffer::open(&array, cpu, PERF_PAGES, wakeup).map(EventBuffer::Perf))
                    .collect::<Result<Vec<_>, _>>()?;
                Self::with_buffers(transport, buffers, Some(array))
            }
            (_, other) => Err(TransportError::MapType { transport, found: format!("{other:?}") }),
        }
    }

    /// A source reading one ring buffer (fresh, or adopted from its pin: see crate::pin).
    pub fn from_ring(ring: RingReader) -> Result<Self, TransportError> {
        Self::with_buffers(Transport::Ringbuf, vec![EventBuffer::Ring(ring)], None)
    }

    fn with_buffers(transport: Transport, buffers: Vec<EventBuffer>, array: Option<MapData>) -> Result<Self, TransportError> {
        let epoll = epoll_new().map_err(TransportError::Epoll)?;
        for b in &buffers {
            epoll_add(&epoll, b.fd()).map_err(TransportError::Epoll)?;
        }
        Ok(Self { transport, buffers, epoll, pending: VecDeque::new(), lost: 0, _array: array })
    }

    /// Whether a record is waiting, wake-up or not.
    pub fn has_data(&self) -> bool {
        !self.pending.is_empty() || self.buffers.iter().any(EventBuffer::has_data)
    }

    /// Moves every waiting record of every buffer into `out` (after any `next()` left queued);
    /// returns how many records the kernel reported lost meanwhile (perf).
    pub fn drain(&mut self, out: &mut Vec<Vec<u8>>) -> u64 {
        let before = self.lost;
        self.drain_each(|record| {
            out.push(record.to_vec());
            Ok::<_, std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {});
        self.lost - before
    }

    /// Hands every waiting record to `f` where it lies in the buffer (records `next()` left
    /// queued first), freeing each one's space after `f` returns: the reader's path, which copies
    /// nothing. Returns how many records; losses the kernel reported are added to `lost`. An
    /// error from `f` stops the drain after that record.
    pub fn drain_each<E>(&mut self, mut f: impl FnMut(&[u8]) -> Result<(), E>) -> Result<usize, E> {
        let mut taken = 0;
        while let Some(record) = self.pending.pop_front() {
            taken += 1;
            f(&record)?;
        }
        for b in &mut self.buffers {
            let (n, lost) = b.drain_each(&mut f)?;
            taken += n;
            self.lost += lost;
        }
        Ok(taken)
    }

    /// The next waiting record, without blocking.
    #[allow(clippy::should_implement_trait, reason = "mirrors RingBuf::next, which callers used before")]
    pub fn next(&mut self) -> Option<Vec<u8>> {
        if self.pending.is_empty() {
            let mut out = Vec::new();
            for b in &mut self.buffers {
                let (_, lost) = b
                    .drain_each(|record| {
                        out.push(record.to_vec());
                        Ok::<_, std::convert::Infallible>(())
                    })
                    .unwrap_or_else(|never| match never {});
                self.lost += lost;
            }
            self.pending.extend(out);
        }
        self.pending.pop_front()
    }

    /// Blocks until a record is waiting in some buffer or `timeout` passes; true if one is.
    ///
    /// For callers that drain synchronously and must wait for an event the kernel emits
    /// asynchronously (a TCP state change completed in softirq after the syscall returned).
    /// Under `batched` most records come without a wake-up, so this polls the buffers' fds for
    /// at most a millisecond at a time and looks at the positions in between: it returns within
    /// about a millisecond of a record's arrival, wake-up or not, and never guesses a delay.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.has_data() {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let ms = libc::c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX).min(WAIT_SLICE_MS);
            self.poll(ms)?;
        }
    }

    /// Waits up to `ms` for a wake-up of any buffer (0: just takes the pending ones).
    fn poll(&self, ms: libc::c_int) -> io::Result<()> {
        epoll_take(&self.epoll, ms)
    }
}

fn epoll_new() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 has no memory preconditions.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Watches `fd` for readability, level-triggered.
fn epoll_add(epoll: &OwnedFd, fd: RawFd) -> io::Result<()> {
    let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
    // SAFETY: both fds are open; event is a valid epoll_event for the call.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `ms` for readiness and takes what is reported; EINTR is no error.
fn epoll_take(epoll: &OwnedFd, ms: libc::c_int) -> io::Result<()> {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 16];
    // SAFETY: events is a valid array of the length passed.
    let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), events.len() as libc::c_int, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

impl AsRawFd for EventSource {
    /// The epoll fd over every buffer: readable when a buffer's wake-up came.
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

/// One buffer's fd as the runtime watches it. The fd belongs to a buffer of the [`Streamer`]'s
/// sources, which outlive it (see the field order there).
struct BufferFd(RawFd);

impl AsRawFd for BufferFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The run loop's reader: every monitor's buffers and one drain timer, so an idle node costs one
/// timer whatever the number of monitors and CPUs. [`Streamer::ready`] resolves on any buffer's
/// wake-up or when the timer is due; [`Streamer::drain_each`] then hands every waiting record to
/// the caller in place. Used by `tapio-load run` and by the delivery benchmark.
///
/// Each buffer's own fd is registered with the runtime (tokio watches it edge-triggered), as the
/// run loop registered its buffers before delivery policies: nothing nested.
pub struct Streamer {
    // Declared first, so dropped first: each holds an fd the sources below own.
    fds: Vec<AsyncFd<BufferFd>>,
    sources: Vec<EventSource>,
    /// The drain timer and its next deadline; None under `immediate`.
    timer: Option<(DrainTimer, tokio::time::Instant)>,
}

impl Streamer {
    /// Registers every buffer of `sources` with the current tokio runtime.
    pub fn new(sources: Vec<EventSource>, delivery: Delivery) -> io::Result<Self> {
        let mut fds = Vec::new();
        for source in &sources {
            for b in &source.buffers {
                // SAFETY: the buffer keeps its fd open, unchanged, until it is dropped, which
                // happens only after this AsyncFd is (field order of Streamer).
                let fd = unsafe { AsyncFd::register_with_interest(BufferFd(b.fd()), tokio::io::Interest::READABLE) }
                    .map_err(io::Error::from)?;
                fds.push(fd);
            }
        }
        let timer = DrainTimer::new(&delivery).map(|t| {
            let due = tokio::time::Instant::now() + t.interval();
            (t, due)
        });
        Ok(Self { fds, sources, timer })
    }

    /// Resolves on a wake-up of any buffer or when the drain timer is due, whichever is first.
    /// Cancel-safe: dropped before it resolves (another branch of a `select!` won), it consumes
    /// nothing, and the timer's deadline stays where it was.
    pub async fn ready(&mut self) -> io::Result<()> {
        let due = self.timer.as_ref().map(|(_, due)| *due);
        let fds = &self.fds;
        // Every buffer that signalled has its readiness cleared before the caller reads: a
        // wake-up that comes after this sets it again, so a record committed during the drain is
        // never left without a next pass.
        let woken = std::future::poll_fn(|cx| {
            let mut any = false;
            for fd in fds {
                match fd.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => {
                        guard.clear_ready();
                        any = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if any {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        });
        tokio::select! {
            woken = woken => woken,
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => Ok(()),
        }
    }

    /// Hands every waiting record of every source to `f` where it lies, and sets the timer: back
    /// to its first interval if there were records, else one step further. Returns how many.
    pub fn drain_each<E>(&mut self, mut f: impl FnMut(&[u8]) -> Result<(), E>) -> Result<usize, E> {
        let mut taken = 0;
        for source in &mut self.sources {
            let lost = source.lost;
            taken += source.drain_each(&mut f)?;
            if source.lost > lost {
                tracing::warn!(lost = source.lost - lost, transport = %source.transport, "perf buffer overflowed: records lost");
            }
        }
        if let Some((timer, due)) = &mut self.timer {
            timer.drained(taken > 0);
            *due = tokio::time::Instant::now() + timer.interval();
        }
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_backs_off_to_the_bound_and_resets_on_data() {
        let mut t = DrainTimer::new(&Delivery { policy: DeliveryPolicy::Batched, bound_ms: 10 }).expect("batched has a timer");
        let mut seen = vec![t.interval()];
        for _ in 0..8 {
            t.drained(false);
            seen.push(t.interval());
        }
        let ms: Vec<f64> = seen.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        assert_eq!(ms, [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0]);
        t.drained(true);
        assert_eq!(t.interval(), DRAIN_FIRST);
    }

    #[test]
    fn immediate_has_no_timer_and_a_tight_bound_keeps_the_first_interval() {
        assert!(DrainTimer::new(&Delivery { policy: DeliveryPolicy::Immediate, bound_ms: 20 }).is_none());
        let tight = DrainTimer::new(&Delivery { policy: DeliveryPolicy::Batched, bound_ms: 1 }).expect("batched has a timer");
        assert_eq!(tight.max, DRAIN_FIRST);
    }

    /// The loader computes the wake-up threshold from the ring's size; without `ring_size` that
    /// is the objects' own.
    #[test]
    fn default_ring_size_is_the_objects() {
        let rings = crate::bundle::OBJECTS.iter().filter(|o| o.transport == Transport::Ringbuf);
        let mut checked = 0;
        for o in rings {
            let object = aya_obj::Object::parse(o.bytes).unwrap_or_else(|e| panic!("{}: {e}", o.file));
            if let Some(events) = object.maps.get("events") {
                assert_eq!(events.max_entries(), DEFAULT_RING_SIZE, "{}", o.file);
                checked += 1;
            }
        }
        assert!(checked >= 6, "every monitor's ring object has an events map");
    }

    #[test]
    fn thresholds_follow_the_policy() {
        let batched = Delivery::default();
        assert_eq!(batched.policy, DeliveryPolicy::Batched);
        assert!(batched.bound() <= Duration::from_millis(20), "the documented default bound is at most 20 ms");
        assert_eq!(batched.ring_wakeup_bytes(DEFAULT_RING_SIZE), u64::from(DEFAULT_RING_SIZE) / 4);
        assert_eq!(batched.perf_wakeup(65536), PerfWakeup::Bytes(16384));
        let immediate = Delivery { policy: DeliveryPolicy::Immediate, ..batched };
        assert_eq!(immediate.ring_wakeup_bytes(DEFAULT_RING_SIZE), 0);
        assert_eq!(immediate.perf_wakeup(65536), PerfWakeup::EverySample);
        assert_eq!("immediate".parse::<DeliveryPolicy>().unwrap(), DeliveryPolicy::Immediate);
        assert!("lazy".parse::<DeliveryPolicy>().is_err());
    }
}
