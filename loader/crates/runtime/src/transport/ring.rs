//! Our own consumer of a `BPF_MAP_TYPE_RINGBUF` (5.8+), for fresh rings and rings adopted from
//! pins alike.
//!
//! aya 0.13.1's `RingBuf` starts its cache of the producer position at 0, so when the consumer
//! position is not 0 - always, for a ring adopted after a run - it takes every stale byte for a
//! record and never stops (aya 0.14 reads the producer position first). It also offers no way to
//! ask whether data is waiting without consuming it, which the `batched` delivery policy needs
//! (records arrive without a wake-up, so readiness of the fd says nothing). This reader follows
//! the kernel's protocol (kernel/bpf/ringbuf.c) itself: the consumer page is mapped read-write,
//! the producer page and the data pages (mapped twice, so a record never wraps) read-only.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use aya::maps::MapData;
use thiserror::Error;

/// `BPF_RINGBUF_BUSY_BIT` (include/uapi/linux/bpf.h): the record is still being written.
const RINGBUF_BUSY: u32 = 1 << 31;
/// `BPF_RINGBUF_DISCARD_BIT`: the program discarded the record; skip it.
const RINGBUF_DISCARD: u32 = 1 << 30;
/// `BPF_RINGBUF_HDR_SZ`: the header before each record.
const RINGBUF_HEADER: usize = 8;

/// Why a ring could not be mapped.
#[derive(Debug, Error)]
pub enum RingError {
    #[error("ring buffer: {0}")]
    Info(#[source] aya::maps::MapError),
    #[error("ring buffer: size {0} is not a power of two")]
    Size(u32),
    #[error("ring buffer: mmap: {0}")]
    Mmap(#[source] io::Error),
}

/// A mapped ring buffer and its consumer position.
pub struct RingReader {
    map: MapData,
    consumer: NonNull<libc::c_void>,
    producer: NonNull<libc::c_void>,
    page: usize,
    size: usize,
}

// SAFETY: the mappings belong to this value alone; the consumer position is only written through
// &mut self, and the shared reads (`has_data`) are atomic loads.
unsafe impl Send for RingReader {}

impl RingReader {
    /// Maps the ring's pages.
    pub fn new(map: MapData) -> Result<Self, RingError> {
        let size = map.info().map_err(RingError::Info)?.max_entries();
        if !size.is_power_of_two() {
            return Err(RingError::Size(size));
        }
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let fd = map.fd().as_fd().as_raw_fd();
        let map_pages = |len: usize, prot: libc::c_int, offset: usize| {
            // SAFETY: a fresh shared mapping of the ring's fd; the kernel checks len and offset.
            let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, offset as libc::off_t) };
            if ptr == libc::MAP_FAILED {
                return Err(RingError::Mmap(io::Error::last_os_error()));
            }
            Ok(NonNull::new(ptr).expect("mmap succeeded"))
        };
        let consumer = map_pages(page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = match map_pages(page + 2 * size as usize, libc::PROT_READ, page) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: unmapping the mapping made just above.
                unsafe { libc::munmap(consumer.as_ptr(), page) };
                return Err(e);
            }
        };
        Ok(Self { map, consumer, producer, page, size: size as usize })
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the consumer page starts with the kernel's `unsigned long consumer_pos`,
        // 8-byte aligned (page aligned), valid while the mapping lives.
        unsafe { &*self.consumer.as_ptr().cast::<AtomicU64>() }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: as above, for the producer page's `producer_pos`.
        unsafe { &*self.producer.as_ptr().cast::<AtomicU64>() }
    }

    /// Whether a record (committed or still being written) lies past the consumer position.
    pub fn has_data(&self) -> bool {
        self.producer_pos().load(Ordering::Acquire) != self.consumer_pos().load(Ordering::Relaxed)
    }

    /// Moves every committed record into `out`; returns how many.
    pub fn drain(&mut self, out: &mut Vec<Vec<u8>>) -> usize {
        self.drain_each(|record| {
            out.push(record.to_vec());
            Ok::<_, std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {})
    }

    /// Hands every committed record to `f` where it lies in the ring, then frees its space;
    /// returns how many. No copy: a decoder reads only the bytes it needs (for a 1360-byte exec
    /// record, a few cache lines of the 22). An error from `f` stops the drain after that record.
    pub fn drain_each<E>(&mut self, mut f: impl FnMut(&[u8]) -> Result<(), E>) -> Result<usize, E> {
        let mask = (self.size - 1) as u64;
        let mut cons = self.consumer_pos().load(Ordering::Acquire);
        let mut taken = 0;
        // Whether the ring was found empty (or its next record uncommitted) after a full fence.
        let mut fenced = false;
        loop {
            // Acquire pairs with the kernel's release of producer_pos: record headers before it
            // are visible.
            let prod = self.producer_pos().load(Ordering::Acquire);
            if cons > prod {
                // Only a broken consumer (aya 0.13.1's, see above) gets ahead of the producer,
                // and then the kernel refuses every reservation: catch up to resume the flow.
                tracing::warn!(consumer = cons, producer = prod, "ring buffer consumer ahead of producer; resetting it");
                self.consumer_pos().store(prod, Ordering::Release);
                return Ok(taken);
            }
            let offset = self.page + (cons & mask) as usize;
            // SAFETY: offset + 8 lies within the first copy of the data pages; headers are
            // 8-byte aligned. Read only when a record lies there (cons < prod).
            let header = (cons < prod)
                .then(|| unsafe { &*self.producer.as_ptr().cast::<u8>().add(offset).cast::<AtomicU32>() }.load(Ordering::Acquire));
            let Some(header) = header.filter(|h| h & RINGBUF_BUSY == 0) else {
                // Nothing (committed) to read. Before the caller sleeps on that, a full fence and
                // one more look. The kernel's commit publishes the record, then reads
                // consumer_pos to decide whether to wake us (without BPF_RB_NO_WAKEUP: only when
                // we had caught up with it); we published consumer_pos, then read the positions.
                // Without a fence between our store and these loads, x86 lets the loads go first
                // (the store waits in the store buffer), each side misses the other's write, and
                // the record is left with no wake-up - and under `immediate` every later record
                // too, since we never catch up again. Measured before this fence: the reader
                // stalled for seconds under `immediate` at 100,000 records/s. aya 0.13 stores its
                // consumer position SeqCst for this reason; the pinned-ring reader this one grew
                // from used a release store. One fence per drain, not per record.
                if fenced {
                    return Ok(taken);
                }
                std::sync::atomic::fence(Ordering::SeqCst);
                fenced = true;
                continue;
            };
            fenced = false;
            let len = (header & !(RINGBUF_BUSY | RINGBUF_DISCARD)) as usize;
            let mut result = Ok(());
            if header & RINGBUF_DISCARD == 0 && len <= self.size {
                // SAFETY: the data pages are mapped twice, so a record of at most `size` bytes
                // starting in the first copy is contiguous; the kernel leaves it alone until the
                // consumer position passes it, below.
                let data = unsafe {
                    std::slice::from_raw_parts(self.producer.as_ptr().cast::<u8>().add(offset + RINGBUF_HEADER), len)
                };
                result = f(data);
                taken += 1;
            }
            cons += ((RINGBUF_HEADER + len + 7) & !7) as u64;
            // Release: the kernel may reuse the space once it sees the new position, and our
            // reads of the record happen before.
            self.consumer_pos().store(cons, Ordering::Release);
            result?;
        }
    }
}

impl AsRawFd for RingReader {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the two mappings `new` made.
        unsafe {
            libc::munmap(self.consumer.as_ptr(), self.page);
            libc::munmap(self.producer.as_ptr(), self.page + 2 * self.size);
        }
    }
}
