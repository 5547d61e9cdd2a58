//! The kernel monitor's records (probes/include/kernel.h) and their decoding.

use serde::Serialize;

use super::{
    c_string,
    network::{tcp_state_name, FlowFields},
    read_record, Body, DecodeError, Event, TapioHeader,
};
// The record mirrors and their C constants (probes/include/kernel.h).
use tapio_abi::kernel::*;


/// The kernel fields of an output record.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum KernelBody {
    Sock {
        #[serde(flatten)]
        flow: FlowFields,
        oldstate: &'static str,
        newstate: &'static str,
        /// Whether `cgroup_id` is the socket's own cgroup (sk_cgrp_data) rather than the
        /// current task's, which in softirq is unrelated to the socket.
        sock_cgroup: bool,
    },
    /// `pid`/`tgid`/`comm`/`cgroup_id` of the record are the task that hit the OOM; these name
    /// the task killed. Kernels before 6.8 give only the victim's pid: the rest is then absent.
    Oom {
        victim_pid: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        victim_tgid: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        victim_comm: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        victim_cgroup_id: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        victim_uid: Option<u32>,
    },
}

/// Decodes a kernel record whose header is already read.
pub fn decode(h: &TapioHeader, bytes: &[u8]) -> Result<Event, DecodeError> {
    let (name, body) = match h.kind {
        KERNEL_CONNECT | KERNEL_ACCEPT | KERNEL_CLOSE => {
            let e: KernelSockEvent = read_record(bytes, "kernel_sock_event")?;
            let name = match h.kind {
                KERNEL_CONNECT => "connect",
                KERNEL_ACCEPT => "accept",
                _ => "close",
            };
            let body = KernelBody::Sock {
                flow: FlowFields::from(&e.flow),
                oldstate: tcp_state_name(e.oldstate),
                newstate: tcp_state_name(e.newstate),
                sock_cgroup: e.flags & KERNEL_F_SOCK_CGROUP != 0,
            };
            (name, body)
        }
        KERNEL_OOM_KILL => {
            let e: KernelOomEvent = read_record(bytes, "kernel_oom_event")?;
            let task = e.flags & KERNEL_F_VICTIM_TASK != 0;
            let body = KernelBody::Oom {
                victim_pid: e.victim_pid,
                victim_tgid: task.then_some(e.victim_tgid),
                victim_comm: task.then(|| c_string(&e.victim_comm)),
                victim_cgroup_id: task.then_some(e.victim_cgroup_id),
                victim_uid: (e.flags & KERNEL_F_VICTIM_UID != 0).then_some(e.victim_uid),
            };
            ("oom_kill", body)
        }
        kind => return Err(DecodeError::UnknownKind { monitor: "kernel", kind }),
    };
    Ok(Event::from_header(h, "kernel", name, Body::Kernel(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_without_task_omits_victim_details() {
        let e = KernelOomEvent {
            hdr: TapioHeader { monitor: 4, kind: KERNEL_OOM_KILL, ..Default::default() },
            victim_pid: 77,
            ..Default::default()
        };
        // SAFETY: KernelOomEvent is repr(C) plain data with no padding holes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&e as *const KernelOomEvent).cast::<u8>(), std::mem::size_of::<KernelOomEvent>())
        };
        let ev = decode(&e.hdr, bytes).unwrap();
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["event"], "oom_kill");
        assert_eq!(json["victim_pid"], 77);
        assert!(json.get("victim_cgroup_id").is_none(), "{json}");
    }
}
