//! One CPU's perf buffer for a `BPF_MAP_TYPE_PERF_EVENT_ARRAY` (4.4+), opened and read by us.
//!
//! aya's `PerfEventArray::open` (0.13 and 0.14 alike) always asks for a wake-up per sample (`wakeup_events = 1`),
//! which costs the kernel an irq_work and the reader a wake-up for every record. The `batched`
//! delivery policy needs a byte watermark instead (`watermark = 1, wakeup_watermark = N`: one
//! wake-up per N bytes written) with the reader draining on a timer, and a way to see whether data
//! is waiting without a wake-up. So this module opens the `PERF_COUNT_SW_BPF_OUTPUT` event itself
//! (include/uapi/linux/perf_event.h), maps it, puts its fd in the array at the CPU's index and
//! reads the ring as the kernel documents it (`struct perf_event_mmap_page`): `data_head` read
//! with acquire, records copied out (a record may wrap around the end of the data area), then
//! `data_tail` stored with release so the kernel may reuse the space.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use thiserror::Error;

/// `PERF_TYPE_SOFTWARE`.
const PERF_TYPE_SOFTWARE: u32 = 1;
/// `PERF_COUNT_SW_BPF_OUTPUT` (4.4): the event `bpf_perf_event_output` writes samples to.
const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;
/// `PERF_SAMPLE_RAW`: each sample carries the program's bytes.
const PERF_SAMPLE_RAW: u64 = 1 << 10;
/// `perf_event_attr` flag bits: `disabled` (bit 0) and `watermark` (bit 14).
const ATTR_DISABLED: u64 = 1 << 0;
const ATTR_WATERMARK: u64 = 1 << 14;
/// `PERF_FLAG_FD_CLOEXEC`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// `PERF_EVENT_IOC_ENABLE`: `_IO('$', 0)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
/// `PERF_RECORD_LOST`: `{ header; u64 id; u64 lost; }`.
const PERF_RECORD_LOST: u32 = 2;
/// `PERF_RECORD_SAMPLE`: `{ header; u32 size; u8 data[size]; }` with `PERF_SAMPLE_RAW` alone.
const PERF_RECORD_SAMPLE: u32 = 9;
/// `sizeof(struct perf_event_header)`.
const HEADER: u64 = 8;
/// Offsets in `struct perf_event_mmap_page` of `data_head`, `data_tail`, `data_offset` and
/// `data_size` (the last two since 4.1; zero before, when the data starts at the second page).
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;
const DATA_OFFSET: usize = 1040;
const DATA_SIZE: usize = 1048;

/// `struct perf_event_attr` up to `config2` (`PERF_ATTR_SIZE_VER1`, 72 bytes, 2.6.39): every
/// field this event needs, and a size every kernel that has BPF output accepts.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    /// `wakeup_events`, or `wakeup_watermark` (bytes) when the `watermark` flag is set.
    wakeup: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
}

/// When the kernel wakes the reader of a perf buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerfWakeup {
    /// After every sample (`wakeup_events = 1`): aya's and libbpf's default.
    EverySample,
    /// Once this many bytes were written since the last wake-up (`watermark`, `wakeup_watermark`).
    Bytes(u32),
}

/// Why a perf buffer could not be set up.
#[derive(Debug, Error)]
pub enum PerfError {
    #[error("perf_event_open(PERF_COUNT_SW_BPF_OUTPUT, cpu {cpu}): {source}")]
    Open {
        cpu: u32,
        #[source]
        source: io::Error,
    },
    #[error("cpu {cpu}: mmap of {bytes} bytes: {source}")]
    Mmap {
        cpu: u32,
        bytes: usize,
        #[source]
        source: io::Error,
    },
    #[error("cpu {cpu}: PERF_EVENT_IOC_ENABLE: {source}")]
    Enable {
        cpu: u32,
        #[source]
        source: io::Error,
    },
    #[error("cpu {cpu}: put the perf event in the array (BPF_MAP_UPDATE_ELEM): {source}")]
    Insert {
        cpu: u32,
        #[source]
        source: io::Error,
    },
}

/// One CPU's perf buffer, registered in the array at index `cpu`.
pub struct PerfBuffer {
    fd: OwnedFd,
    base: NonNull<u8>,
    mmap_len: usize,
    data_offset: usize,
    /// A power of two.
    data_size: u64,
    cpu: u32,
}

// SAFETY: the mapping belongs to this value alone; data_tail is only written through &mut self,
// and the shared reads (`has_data`) are atomic loads.
unsafe impl Send for PerfBuffer {}

impl PerfBuffer {
    /// Opens CPU `cpu`'s event with `pages` data pages (a power of two), maps it, enables it and
    /// stores its fd at index `cpu` of `array`.
    pub fn open(array: &MapData, cpu: u32, pages: usize, wakeup: PerfWakeup) -> Result<Self, PerfError> {
        let mut attr = PerfEventAttr {
            kind: PERF_TYPE_SOFTWARE,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_BPF_OUTPUT,
            sample_period: 1,
            sample_type: PERF_SAMPLE_RAW,
            flags: ATTR_DISABLED,
            wakeup: 1,
            ..Default::default()
        };
        if let PerfWakeup::Bytes(bytes) = wakeup {
            attr.flags |= ATTR_WATERMARK;
            attr.wakeup = bytes;
        }
        // SAFETY: attr is a valid perf_event_attr of the size it declares, alive for the call.
        let fd = unsafe {
            libc::syscall(libc::SYS_perf_event_open, &attr as *const PerfEventAttr, -1i32, cpu as i32, -1i32, PERF_FLAG_FD_CLOEXEC)
        };
        if fd < 0 {
            return Err(PerfError::Open { cpu, source: io::Error::last_os_error() });
        }
        // SAFETY: the kernel just returned this descriptor to us.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let mmap_len = page * (1 + pages);
        // SAFETY: a fresh shared mapping of the event's fd; the kernel checks the length (one
        // metadata page plus a power of two of data pages).
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), mmap_len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(PerfError::Mmap { cpu, bytes: mmap_len, source: io::Error::last_os_error() });
        }
        let base = NonNull::new(ptr.cast::<u8>()).expect("mmap succeeded");
        let mut buffer = Self { fd, base, mmap_len, data_offset: page, data_size: (page * pages) as u64, cpu };
        // SAFETY: both fields lie in the metadata page, which is mapped.
        let (offset, size) = unsafe {
            (
                std::ptr::read_volatile(buffer.base.as_ptr().add(DATA_OFFSET).cast::<u64>()),
                std::ptr::read_volatile(buffer.base.as_ptr().add(DATA_SIZE).cast::<u64>()),
            )
        };
        if offset != 0 && size != 0 {
            buffer.data_offset = offset as usize;
            buffer.data_size = size;
        }
        // SAFETY: an ioctl without argument on our own perf event fd.
        if unsafe { libc::ioctl(buffer.fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) } != 0 {
            return Err(PerfError::Enable { cpu, source: io::Error::last_os_error() });
        }
        map_update(array, cpu, buffer.fd.as_raw_fd()).map_err(|source| PerfError::Insert { cpu, source })?;
        Ok(buffer)
    }

    /// The CPU this buffer belongs to.
    pub fn cpu(&self) -> u32 {
        self.cpu
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: `offset` is DATA_HEAD or DATA_TAIL, 8-byte aligned within the mapped metadata
        // page, valid while the mapping lives.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// Whether a record lies between the kernel's head and our tail.
    pub fn has_data(&self) -> bool {
        self.word(DATA_HEAD).load(Ordering::Acquire) != self.word(DATA_TAIL).load(Ordering::Relaxed)
    }

    /// Moves every sample into `out`; returns how many and the samples the kernel reported lost
    /// (`PERF_RECORD_LOST`: the buffer was full).
    pub fn drain(&mut self, out: &mut Vec<Vec<u8>>) -> (usize, u64) {
        self.drain_each(|record| {
            out.push(record.to_vec());
            Ok::<_, std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {})
    }

    /// Hands every sample to `f` where it lies (a sample that wraps around the end of the data
    /// area is first copied into one piece), then frees the space; returns how many samples and
    /// how many the kernel reported lost. An error from `f` stops the drain after that sample.
    pub fn drain_each<E>(&mut self, f: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(usize, u64), E> {
        // Acquire pairs with the kernel's release of data_head: the records before it are visible.
        let head = self.word(DATA_HEAD).load(Ordering::Acquire);
        let tail = self.word(DATA_TAIL).load(Ordering::Relaxed);
        // SAFETY: the data area is mapped for as long as self, and read_records reads only
        // between tail and head, which the kernel does not write until data_tail passes it.
        let area = unsafe { DataArea::new(self.base.as_ptr().add(self.data_offset), self.data_size) };
        let (tail, result) = read_records(&area, head, tail, self.cpu, f);
        // Release: our reads of the records happen before the kernel may overwrite them.
        self.word(DATA_TAIL).store(tail, Ordering::Release);
        result
    }
}

/// A perf buffer's data area: `size` bytes (a power of two) at `ptr`, positions taken modulo
/// the size. Only raw pointers: the kernel writes the part of the area we are not reading.
struct DataArea {
    ptr: *const u8,
    size: u64,
}

impl DataArea {
    /// # Safety
    /// `ptr` must point to `size` readable bytes (a power of two) for the value's lifetime.
    unsafe fn new(ptr: *const u8, size: u64) -> Self {
        debug_assert!(size.is_power_of_two());
        Self { ptr, size }
    }

    /// The two pieces of the `len` bytes at ring position `pos`: the second is empty unless the
    /// bytes wrap around the end of the area. `len` must not exceed the area's size.
    fn pieces(&self, pos: u64, len: usize) -> (&[u8], &[u8]) {
        let start = (pos & (self.size - 1)) as usize;
        let first = len.min(self.size as usize - start);
        // SAFETY: start + first <= size and len - first < size: both pieces lie in the area
        // (`new`'s contract); callers read only between the tail and the head, which the kernel
        // leaves alone.
        unsafe { (std::slice::from_raw_parts(self.ptr.add(start), first), std::slice::from_raw_parts(self.ptr, len - first)) }
    }

    fn read<const N: usize>(&self, pos: u64) -> [u8; N] {
        let (a, b) = self.pieces(pos, N);
        let mut bytes = [0u8; N];
        bytes[..a.len()].copy_from_slice(a);
        bytes[a.len()..].copy_from_slice(b);
        bytes
    }
}

/// Hands every `PERF_RECORD_SAMPLE` between `tail` and `head` of `area` to `f` and adds up
/// `PERF_RECORD_LOST`; returns the new tail (past every record read, the failing one included)
/// and what `f` returned or (samples, lost).
#[allow(clippy::type_complexity, reason = "a tail and a result: naming the pair would not make it clearer")]
fn read_records<E>(
    area: &DataArea,
    head: u64,
    mut tail: u64,
    cpu: u32,
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> (u64, Result<(usize, u64), E>) {
    let (mut taken, mut lost) = (0, 0);
    let mut wrapped = Vec::new();
    while head.wrapping_sub(tail) >= HEADER {
        // Records are 8-byte aligned and the area a power of two: a header never wraps, but it
        // is read through pieces() all the same.
        let header = u64::from_ne_bytes(area.read::<8>(tail));
        let (kind, size) = (header as u32, u64::from((header >> 48) as u16));
        if size < HEADER || size > head.wrapping_sub(tail) {
            tracing::warn!(cpu, size, "perf buffer: malformed record header; skipping to the head");
            return (head, Ok((taken, lost)));
        }
        let mut result = Ok(());
        match kind {
            PERF_RECORD_SAMPLE if size >= HEADER + 4 => {
                let raw = u64::from(u32::from_ne_bytes(area.read::<4>(tail + HEADER)));
                if HEADER + 4 + raw <= size {
                    let (a, b) = area.pieces(tail + HEADER + 4, raw as usize);
                    result = if b.is_empty() {
                        f(a)
                    } else {
                        wrapped.clear();
                        wrapped.extend_from_slice(a);
                        wrapped.extend_from_slice(b);
                        f(&wrapped)
                    };
                    taken += 1;
                }
            }
            PERF_RECORD_LOST if size >= HEADER + 16 => lost += u64::from_ne_bytes(area.read::<8>(tail + HEADER + 8)),
            _ => {} // no other record type is asked for; skip whatever comes
        }
        tail = tail.wrapping_add(size);
        if let Err(e) = result {
            return (tail, Err(e));
        }
    }
    (tail, Ok((taken, lost)))
}

impl AsRawFd for PerfBuffer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for PerfBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping `open` made. The array's entry goes away when the
        // event's last reference (the array's) is dropped with the map.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mmap_len) };
    }
}

/// `bpf(BPF_MAP_UPDATE_ELEM)` of `array[cpu] = fd`: aya (0.14 too) offers this only through
/// `PerfEventArray::open`, which would open its own event.
fn map_update(array: &MapData, cpu: u32, fd: RawFd) -> io::Result<()> {
    /// The `map_elem` member of `union bpf_attr`.
    #[repr(C)]
    struct MapElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    let key = cpu;
    let value = fd as u32;
    let attr = MapElemAttr {
        map_fd: array.fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0, // BPF_ANY
    };
    // SAFETY: attr is a valid bpf_attr prefix of the size passed; key and value outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_UPDATE_ELEM, &attr as *const MapElemAttr, std::mem::size_of::<MapElemAttr>()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends a record at `pos` of a 64-byte area, wrapping as the kernel writes.
    fn put(area: &mut [u8], pos: &mut u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            area[((*pos + i as u64) % area.len() as u64) as usize] = *b;
        }
        *pos += bytes.len() as u64;
    }

    fn sample(payload: &[u8]) -> Vec<u8> {
        let size = (HEADER as usize + 4 + payload.len()) as u16;
        let mut r = Vec::new();
        r.extend_from_slice(&PERF_RECORD_SAMPLE.to_ne_bytes());
        r.extend_from_slice(&0u16.to_ne_bytes());
        r.extend_from_slice(&size.to_ne_bytes());
        r.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
        r.extend_from_slice(payload);
        r
    }

    fn lost(n: u64) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&PERF_RECORD_LOST.to_ne_bytes());
        r.extend_from_slice(&0u16.to_ne_bytes());
        r.extend_from_slice(&24u16.to_ne_bytes());
        r.extend_from_slice(&7u64.to_ne_bytes()); // id
        r.extend_from_slice(&n.to_ne_bytes());
        r
    }

    /// Samples across the end of the area come out whole and in order; a lost record is counted;
    /// positions keep growing past the area's size, as the kernel's do.
    #[test]
    fn samples_wrap_and_losses_count() {
        let mut area = vec![0u8; 128];
        let mut head = 104u64; // the reader has consumed everything up to here
        let tail = head;
        put(&mut area, &mut head, &sample(b"abcdefghijkl")); // 24 bytes: 104..128, ends at the edge
        put(&mut area, &mut head, &lost(3)); // 24 bytes: 128..152, in the second lap
        put(&mut area, &mut head, &sample(&[0xaa; 12])); // 24 bytes: 152..176
        // SAFETY: `area` outlives `view` and is 128 bytes long.
        let view = unsafe { DataArea::new(area.as_ptr(), 128) };
        let mut got = Vec::new();
        let (new_tail, result) = read_records(&view, head, tail, 0, |r| {
            got.push(r.to_vec());
            Ok::<_, ()>(())
        });
        assert_eq!(result, Ok((2, 3)));
        assert_eq!(new_tail, head);
        assert_eq!(got, vec![b"abcdefghijkl".to_vec(), vec![0xaa; 12]]);

        // A sample whose payload itself wraps: header at 48, payload 60..72, that is 60..64 and 0..8.
        let mut area = vec![0u8; 64];
        let mut head = 48u64;
        let tail = head;
        put(&mut area, &mut head, &sample(b"0123456789ab"));
        // SAFETY: as above.
        let view = unsafe { DataArea::new(area.as_ptr(), 64) };
        let mut got = Vec::new();
        let (_, result) = read_records(&view, head, tail, 0, |r| {
            got.push(r.to_vec());
            Ok::<_, ()>(())
        });
        assert_eq!(result, Ok((1, 0)));
        assert_eq!(got, vec![b"0123456789ab".to_vec()]);
    }

    /// An error from the callback stops after that record, whose space is freed all the same.
    #[test]
    fn an_error_stops_after_its_record() {
        let mut area = vec![0u8; 64];
        let mut head = 0u64;
        put(&mut area, &mut head, &sample(b"first..."));
        let after_first = head;
        put(&mut area, &mut head, &sample(b"second.."));
        // SAFETY: `area` outlives `view` and is 64 bytes long.
        let view = unsafe { DataArea::new(area.as_ptr(), 64) };
        let (tail, result) = read_records(&view, head, 0, 0, |_| Err("stop"));
        assert_eq!(result, Err("stop"));
        assert_eq!(tail, after_first);
    }
}
