//! The advanced monitor's batch records (probes/include/advanced.h) and their decoding.
//!
//! One ring record carries up to `ADVANCED_BATCH_MAX` events: the kernel sends the record cut to
//! its `count` entries, and [`decode_batch`] expands it into that many output events, each with
//! its own timestamp, thread and process ids, comm, cgroup, uid, CPU and NUMA node.

use serde::Serialize;

use super::{c_string, read_record, Body, DecodeError, Event, TapioHeader};
// The record mirrors and their C constants (probes/include/advanced.h).
use tapio_abi::advanced::*;


/// The advanced fields of an output record (`event` is `syscall`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AdvancedBody {
    /// The syscall number (the event type that sampling rates are keyed by).
    pub syscall_nr: u32,
    /// The syscall's first argument.
    pub arg0: u64,
    /// Identical events (same thread, syscall and first argument) the dedup window suppressed
    /// before this one.
    pub suppressed: u32,
    pub cpu: u16,
    pub numa_node: u16,
    /// How many events the record carrying this one held.
    pub batch_count: u32,
}

/// Expands a batch record into its events. A record shorter than its `count` says is refused.
pub fn decode_batch(h: &TapioHeader, bytes: &[u8]) -> Result<Vec<Event>, DecodeError> {
    if h.kind != ADVANCED_BATCH {
        return Err(DecodeError::UnknownKind { monitor: "advanced", kind: h.kind });
    }
    let head: AdvancedBatchHeader = read_record(bytes, "advanced_batch")?;
    let count = (head.count as usize).min(ADVANCED_BATCH_MAX);
    let entry_size = std::mem::size_of::<AdvancedEntry>();
    let need = ADVANCED_BATCH_HDR_SIZE + count * entry_size;
    if bytes.len() < need {
        return Err(DecodeError::Short { what: "advanced_batch entries", len: bytes.len(), need });
    }
    (0..count)
        .map(|i| {
            let at = ADVANCED_BATCH_HDR_SIZE + i * entry_size;
            let e: AdvancedEntry = read_record(&bytes[at..], "advanced_entry")?;
            Ok(Event {
                ts_ns: e.ts_ns,
                monitor: "advanced",
                event: "syscall",
                pid: e.pid,
                tgid: e.tgid,
                comm: c_string(&e.comm),
                cgroup_id: e.cgroup_id,
                uid: e.uid,
                container: None,
                body: Body::Advanced(AdvancedBody {
                    syscall_nr: e.nr,
                    arg0: e.arg0,
                    suppressed: e.suppressed,
                    cpu: e.cpu,
                    numa_node: e.numa_node,
                    batch_count: count as u32,
                }),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(count: u32, entries: usize) -> Vec<u8> {
        let head = AdvancedBatchHeader {
            hdr: TapioHeader { monitor: super::super::MONITOR_ADVANCED, kind: ADVANCED_BATCH, ..Default::default() },
            count,
            ..Default::default()
        };
        let mut bytes = Vec::new();
        // SAFETY: plain repr(C) integers viewed as bytes.
        bytes.extend_from_slice(unsafe {
            std::slice::from_raw_parts((&head as *const AdvancedBatchHeader).cast::<u8>(), ADVANCED_BATCH_HDR_SIZE)
        });
        for i in 0..entries {
            let e = AdvancedEntry { ts_ns: i as u64, nr: 39, pid: 7, ..Default::default() };
            // SAFETY: as above.
            bytes.extend_from_slice(unsafe {
                std::slice::from_raw_parts((&e as *const AdvancedEntry).cast::<u8>(), std::mem::size_of::<AdvancedEntry>())
            });
        }
        bytes
    }

    #[test]
    fn batch_expands_to_count_events() {
        let bytes = record(3, 3);
        let h: TapioHeader = read_record(&bytes, "h").unwrap();
        let events = decode_batch(&h, &bytes).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].ts_ns, 2);
        assert!(events.iter().all(|e| e.monitor == "advanced" && e.event == "syscall"));
    }

    #[test]
    fn record_shorter_than_its_count_is_refused() {
        let bytes = record(4, 3);
        let h: TapioHeader = read_record(&bytes, "h").unwrap();
        assert!(matches!(decode_batch(&h, &bytes), Err(DecodeError::Short { .. })));
    }

    #[test]
    fn header_size_matches_c() {
        assert_eq!(std::mem::size_of::<AdvancedBatchHeader>(), ADVANCED_BATCH_HDR_SIZE);
        assert_eq!(std::mem::size_of::<AdvancedEntry>(), 64);
    }
}
