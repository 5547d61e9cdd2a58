//! The consumer of a `BPF_MAP_TYPE_RINGBUF` (5.8+), for fresh rings and rings adopted from pins
//! alike: aya's [`RingBuf`], plus a read-only view of the two positions for [`RingReader::has_data`].
//!
//! aya 0.14's `RingBuf` reads the consumer and producer positions when it is made, so a ring
//! opened from its pin (`MapData::from_pin`, see crate::pin) resumes where the previous loader
//! stopped; and it issues the full fence between its consumer-position store and the next
//! producer-position load, without which a record committed meanwhile could wait, unannounced,
//! for the next wake-up (under `immediate`, forever: the reader never catches up again).
//!
//! What aya does not offer is asking whether data is waiting without consuming it, which the
//! `batched` delivery policy needs (records arrive without a wake-up, so readiness of the fd says
//! nothing): for that, the consumer page and the producer page are mapped a second time,
//! read-only, and compared. The positions are the kernel's (kernel/bpf/ringbuf.c): the consumer
//! page starts with `consumer_pos`, the next page with `producer_pos`.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::{Map, MapData, RingBuf};
use thiserror::Error;

/// Why a ring could not be mapped.
#[derive(Debug, Error)]
pub enum RingError {
    #[error("ring buffer: {0}")]
    Info(#[source] aya::maps::MapError),
    #[error("ring buffer: mmap: {0}")]
    Mmap(#[source] io::Error),
}

/// A ring buffer's reader and a read-only view of its positions.
pub struct RingReader {
    ring: RingBuf<MapData>,
    /// The consumer page (offset 0) and the producer page (offset one page), read-only.
    positions: Positions,
}

/// Read-only mappings of the consumer and producer pages, one page each.
struct Positions {
    consumer: NonNull<libc::c_void>,
    producer: NonNull<libc::c_void>,
    page: usize,
}

// SAFETY: the mappings belong to this value alone and are only read, with atomic loads.
unsafe impl Send for Positions {}

impl Positions {
    fn new(fd: RawFd) -> Result<Self, RingError> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let map_page = |offset: usize| {
            // SAFETY: a fresh shared read-only mapping of one page of the ring's fd; the kernel
            // checks the offset.
            let ptr = unsafe { libc::mmap(std::ptr::null_mut(), page, libc::PROT_READ, libc::MAP_SHARED, fd, offset as libc::off_t) };
            if ptr == libc::MAP_FAILED {
                return Err(RingError::Mmap(io::Error::last_os_error()));
            }
            Ok(NonNull::new(ptr).expect("mmap succeeded"))
        };
        let consumer = map_page(0)?;
        let producer = match map_page(page) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: unmapping the mapping made just above.
                unsafe { libc::munmap(consumer.as_ptr(), page) };
                return Err(e);
            }
        };
        Ok(Self { consumer, producer, page })
    }

    fn load(page: NonNull<libc::c_void>, order: Ordering) -> u64 {
        // SAFETY: each page starts with the kernel's `unsigned long` position, 8-byte aligned
        // (page aligned), valid while the mapping lives.
        unsafe { &*page.as_ptr().cast::<AtomicU64>() }.load(order)
    }
}

impl Drop for Positions {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the two mappings `new` made.
        unsafe {
            libc::munmap(self.consumer.as_ptr(), self.page);
            libc::munmap(self.producer.as_ptr(), self.page);
        }
    }
}

impl RingReader {
    /// Opens the ring: aya's reader, and the view of its positions.
    pub fn new(map: MapData) -> Result<Self, RingError> {
        let map = Map::from_map_data(map).map_err(RingError::Info)?;
        let ring = RingBuf::try_from(map).map_err(RingError::Info)?;
        let positions = Positions::new(ring.as_fd().as_raw_fd())?;
        Ok(Self { ring, positions })
    }

    /// Whether a record (committed or still being written) lies past the consumer position.
    pub fn has_data(&self) -> bool {
        Positions::load(self.positions.producer, Ordering::Acquire) != Positions::load(self.positions.consumer, Ordering::Relaxed)
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
    /// record, a few cache lines of the 22). An error from `f` stops the drain after that record
    /// (whose space is freed all the same, as before).
    pub fn drain_each<E>(&mut self, mut f: impl FnMut(&[u8]) -> Result<(), E>) -> Result<usize, E> {
        let mut taken = 0;
        while let Some(record) = self.ring.next() {
            taken += 1;
            let result = f(&record);
            // Dropping the item publishes the new consumer position.
            drop(record);
            result?;
        }
        Ok(taken)
    }
}

impl AsRawFd for RingReader {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}
