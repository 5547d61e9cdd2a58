//! Typed events: the records the probes write (mirrored in tapio-abi) decoded into output records.
//!
//! Every record starts with `struct tapio_header` (probes/include/common.h). Decoding checks the
//! length before reading, so a short or foreign record is an error, never a garbage event.

pub mod advanced;
pub mod cgroup_watch;
pub mod dns;
pub mod kernel;
pub mod network;
pub mod process;
pub mod security;

use serde::Serialize;
use tapio_abi::{
    TapioHeader, MONITOR_ADVANCED, MONITOR_DNS, MONITOR_KERNEL, MONITOR_NETWORK, MONITOR_PROCESS, MONITOR_SECURITY,
};
use thiserror::Error;

/// Why a record from the kernel could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("decode: record of {len} bytes is shorter than {what} ({need} bytes)")]
    Short { what: &'static str, len: usize, need: usize },
    #[error("decode: unknown monitor id {0}")]
    UnknownMonitor(u8),
    #[error("decode: monitor {monitor}: unknown event kind {kind}")]
    UnknownKind { monitor: &'static str, kind: u8 },
    /// An advanced batch record holds `count` events, not one: [`decode_all`] expands it.
    #[error("decode: monitor advanced: a batch of {count} events needs decode_all")]
    Batch { count: usize },
}

/// Reads a `#[repr(C)]` plain-data record from the front of `bytes`.
///
/// Only for the mirror types of this module, whose every bit pattern is valid.
pub fn read_record<T: Copy>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short { what, len: bytes.len(), need });
    }
    // SAFETY: the length is checked above, read_unaligned copes with any alignment, and T is one
    // of this module's repr(C) mirrors made of integers and byte arrays only.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A C string from a fixed buffer: up to the first NUL, invalid UTF-8 replaced.
pub fn c_string(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// One output record, as the output contract names its fields.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub ts_ns: u64,
    pub monitor: &'static str,
    pub event: &'static str,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub uid: u32,
    /// `container_id`, `container_runtime`, `pod_uid`, `qos` when the cgroup is a pod's or a
    /// container's (crate::attribution); absent for a host process.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub container: Option<std::sync::Arc<crate::attribution::parse::Attribution>>,
    #[serde(flatten)]
    pub body: Body,
}

/// The monitor-specific part of an [`Event`].
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Body {
    Process(process::ProcessBody),
    Dns(dns::DnsBody),
    Network(network::NetworkBody),
    Kernel(kernel::KernelBody),
    Security(security::SecurityBody),
    Advanced(advanced::AdvancedBody),
}

impl Event {
    fn from_header(h: &TapioHeader, monitor: &'static str, event: &'static str, body: Body) -> Self {
        Self {
            ts_ns: h.ts_ns,
            monitor,
            event,
            pid: h.pid,
            tgid: h.tgid,
            comm: c_string(&h.comm),
            cgroup_id: h.cgroup_id,
            uid: h.uid,
            container: None,
            body,
        }
    }
}

/// Decodes one record from any monitor, dispatching on the header's monitor id.
pub fn decode(bytes: &[u8], options: &DecodeOptions) -> Result<Event, DecodeError> {
    let header: TapioHeader = read_record(bytes, "tapio_header")?;
    match header.monitor {
        MONITOR_PROCESS => process::decode(&header, bytes, options),
        MONITOR_DNS => dns::decode(&header, bytes),
        MONITOR_NETWORK => network::decode(&header, bytes),
        MONITOR_KERNEL => kernel::decode(&header, bytes),
        MONITOR_SECURITY => security::decode(&header, bytes),
        // advanced: a record is a batch; one of one event decodes here, more need decode_all.
        MONITOR_ADVANCED => {
            let mut events = advanced::decode_batch(&header, bytes)?;
            match events.len() {
                1 => Ok(events.remove(0)),
                count => Err(DecodeError::Batch { count }),
            }
        }
        other => Err(DecodeError::UnknownMonitor(other)),
    }
}

/// Decodes one record into every event it carries: an advanced batch gives `count` events, any
/// other record one. The run loop calls this, so batching stays invisible in the output.
pub fn decode_all(bytes: &[u8], options: &DecodeOptions) -> Result<Vec<Event>, DecodeError> {
    let header: TapioHeader = read_record(bytes, "tapio_header")?;
    if header.monitor == MONITOR_ADVANCED {
        return advanced::decode_batch(&header, bytes);
    }
    decode(bytes, options).map(|event| vec![event])
}

/// User-space decoding choices.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// At most this many argv entries per exec; more sets `argv_truncated`.
    pub argv_max: usize,
    /// A dns query with no response after this long is reported as a `timeout`.
    pub dns_timeout: std::time::Duration,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self { argv_max: 32, dns_timeout: dns::DEFAULT_TIMEOUT }
    }
}
