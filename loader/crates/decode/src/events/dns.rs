//! The dns monitor's records (probes/include/dns.h) and their decoding.
//!
//! A record is either the full `dns_msg_event` (header fields plus up to 512 message bytes) or,
//! when the probe could not capture the bytes, the header-only `dns_event`; the record's length
//! tells them apart. The question name is decoded here, against the real message length the
//! probe recorded (see [`crate::dns_wire`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::{read_record, Body, DecodeError, Event, TapioHeader};
// The record mirrors and their C constants (probes/include/dns.h).
use tapio_abi::dns::*;
use crate::dns_wire as wire;


/// Default time a query waits for its response before a `timeout` is reported (crate::dns).
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);


/// A query type or response code: its mnemonic when known, else the number.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DnsCode {
    Name(&'static str),
    Number(u16),
}

/// The dns fields of an output record (`query`, `response`, `timeout`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DnsBody {
    /// `udp` or `tcp`.
    pub transport: &'static str,
    pub ip_version: u8,
    /// The sender of this message and its receiver (so a response's `saddr` is the server).
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    pub dns_id: u16,
    /// Without the trailing dot; null when the name is malformed or the message has no question.
    pub qname: Option<String>,
    pub qtype: Option<DnsCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode: Option<DnsCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<u16>,
    /// On responses: ns since the matching query, null when no query matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ns: Option<Option<u64>>,
    /// The capture cut the name or lost the message bytes.
    pub truncated: bool,
    /// Why the question could not be decoded, when the sender's message is malformed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub malformed: Option<String>,
    /// The socket's far end, for matching (not output).
    #[serde(skip)]
    pub peer: IpAddr,
    #[serde(skip)]
    pub peer_port: u16,
}

fn addr(bytes: &[u8; 16], ip_version: u8) -> IpAddr {
    match ip_version {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        _ => IpAddr::V6(Ipv6Addr::from(*bytes)),
    }
}

/// Decodes a dns record whose header is already read.
pub fn decode(h: &TapioHeader, bytes: &[u8]) -> Result<Event, DecodeError> {
    let base: DnsEvent = read_record(bytes, "dns_event")?;
    let name = match h.kind {
        DNS_QUERY => "query",
        DNS_RESPONSE => "response",
        kind => return Err(DecodeError::UnknownKind { monitor: "dns", kind }),
    };
    let full = bytes.len() >= std::mem::size_of::<DnsMsgEvent>() && base.cap_len > 0;
    let question = if base.flags & DNS_F_SKB_TAIL != 0 {
        // The record, then the packet from its network header: the message is at tail_off.
        let start = std::mem::size_of::<DnsEvent>() + usize::from(base.tail_off);
        let cap = (base.cap_len as usize).min(DNS_MSG_MAX);
        let msg = bytes.get(start..start + cap).ok_or(DecodeError::Short {
            what: "dns_event and its packet tail",
            len: bytes.len(),
            need: start + cap,
        })?;
        Some(wire::question(msg, base.msg_len as usize, base.qdcount))
    } else if full {
        let e: DnsMsgEvent = read_record(bytes, "dns_msg_event")?;
        let cap = (base.cap_len as usize).min(DNS_MSG_MAX);
        Some(wire::question(&e.msg[..cap], base.msg_len as usize, base.qdcount))
    } else {
        None
    };
    let f = &base.flow;
    let local = addr(&f.saddr, f.ip_version);
    let peer = addr(&f.daddr, f.ip_version);
    let ((saddr, sport), (daddr, dport)) = if base.direction == DNS_DIR_RECV {
        ((peer, f.dport), (local, f.sport))
    } else {
        ((local, f.sport), (peer, f.dport))
    };
    let response = h.kind == DNS_RESPONSE;
    // A runt's header was never read (the probe leaves its fields zero): no rcode or answer
    // count is reported for it rather than a NOERROR and 0 nobody sent.
    let runt = base.flags & DNS_F_RUNT != 0;
    let has_message = question.is_some();
    let q = question.unwrap_or_default();
    let body = DnsBody {
        transport: if f.protocol == 6 { "tcp" } else { "udp" },
        ip_version: f.ip_version,
        saddr: saddr.to_string(),
        sport,
        daddr: daddr.to_string(),
        dport,
        dns_id: base.dns_id,
        qname: q.name,
        qtype: q.qtype.map(|t| wire::qtype_name(t).map_or(DnsCode::Number(t), DnsCode::Name)),
        rcode: (response && !runt).then(|| {
            let rc = (base.dns_flags & 0xf) as u8;
            wire::rcode_name(rc).map_or(DnsCode::Number(rc.into()), DnsCode::Name)
        }),
        answers: (response && !runt).then_some(base.ancount),
        latency_ns: response.then_some(None),
        truncated: !has_message || q.cut || q.malformed.is_some(),
        malformed: if runt {
            Some(format!("message of {} bytes is shorter than the 12-byte DNS header", base.msg_len))
        } else {
            q.malformed.map(|e| e.to_string())
        },
        peer,
        peer_port: f.dport,
    };
    Ok(Event::from_header(h, "dns", name, Body::Dns(body)))
}

/// An event for the correlator's unit tests.
#[cfg(test)]
pub(crate) fn test_event(event: &'static str, tgid: u32, dns_id: u16, ts_ns: u64) -> Event {
    Event {
        ts_ns,
        monitor: "dns",
        event,
        pid: tgid,
        tgid,
        comm: "t".into(),
        cgroup_id: 0,
        uid: 0,
        container: None,
        body: Body::Dns(DnsBody {
            transport: "udp",
            ip_version: 4,
            saddr: "127.0.0.1".into(),
            sport: 40000,
            daddr: "127.0.0.1".into(),
            dport: 53,
            dns_id,
            qname: Some("tapio.test".into()),
            qtype: Some(DnsCode::Name("A")),
            rcode: None,
            answers: None,
            latency_ns: (event == "response").then_some(None),
            truncated: false,
            malformed: None,
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            peer_port: 53,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_abi::network::TapioFlow;

    fn record(kind: u8, msg: &[u8], msg_len: u32, full: bool) -> Vec<u8> {
        let mut base = DnsEvent {
            hdr: TapioHeader { monitor: 2, kind, ..Default::default() },
            flow: TapioFlow { ip_version: 4, protocol: 17, sport: 40000, dport: 53, ..Default::default() },
            dns_id: 0x1234,
            dns_flags: if kind == DNS_RESPONSE { 0x8183 } else { 0x0100 },
            qdcount: 1,
            ancount: 2,
            msg_len,
            cap_len: if full { msg.len() as u32 } else { 0 },
            direction: DNS_DIR_RECV,
            ..Default::default()
        };
        base.flow.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        base.flow.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        let mut out = Vec::new();
        if full {
            let mut e = DnsMsgEvent { base, msg: [0; DNS_MSG_MAX] };
            e.msg[..msg.len()].copy_from_slice(msg);
            // SAFETY: DnsMsgEvent is repr(C) plain data; reading its bytes is sound.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts((&e as *const DnsMsgEvent).cast::<u8>(), std::mem::size_of::<DnsMsgEvent>())
            });
        } else {
            base.flags = DNS_F_NO_SCRATCH;
            // SAFETY: as above.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts((&base as *const DnsEvent).cast::<u8>(), std::mem::size_of::<DnsEvent>())
            });
        }
        out
    }

    const MSG: &[u8] = b"\x12\x34\x81\x83\x00\x01\x00\x02\x00\x00\x00\x00\x02nx\x05tapio\x04test\x00\x00\x1c\x00\x01";

    #[test]
    fn response_fields_and_direction() {
        let bytes = record(DNS_RESPONSE, MSG, MSG.len() as u32, true);
        let h: TapioHeader = read_record(&bytes, "h").unwrap();
        let e = decode(&h, &bytes).unwrap();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "response");
        assert_eq!(v["qname"], "nx.tapio.test");
        assert_eq!(v["qtype"], "AAAA");
        assert_eq!(v["rcode"], "NXDOMAIN");
        assert_eq!(v["answers"], 2);
        assert_eq!(v["latency_ns"], serde_json::Value::Null);
        // Received: the sender is the peer.
        assert_eq!((v["saddr"].as_str(), v["sport"].as_u64()), (Some("127.0.0.2"), Some(53)));
        assert_eq!((v["daddr"].as_str(), v["dport"].as_u64()), (Some("127.0.0.1"), Some(40000)));
        assert_eq!(v["truncated"], false);
        assert!(v.get("malformed").is_none());
    }

    /// The perf build's packet records: the record, then the packet from its IP header, the
    /// message at tail_off (no per-CPU staging, issue 15 item 6). Decoded as the ring's records.
    #[test]
    fn packet_tail_record_decodes_like_a_full_record() {
        let msg = MSG;
        let decode_bytes = |b: &[u8]| {
            let h: TapioHeader = read_record(b, "h").unwrap();
            serde_json::to_value(decode(&h, b).unwrap()).unwrap()
        };
        let full = decode_bytes(&record(DNS_RESPONSE, msg, msg.len() as u32, true));
        assert_eq!(full["qname"], "nx.tapio.test");
        let mut tail = record(DNS_RESPONSE, msg, msg.len() as u32, false);
        let mut base: DnsEvent = read_record(&tail, "dns_event").unwrap();
        base.flags = DNS_F_SKB_TAIL;
        base.cap_len = msg.len() as u32;
        base.tail_off = 28; // a 20-byte IPv4 header and an 8-byte UDP header
        tail.clear();
        // SAFETY: DnsEvent is repr(C) plain data.
        tail.extend_from_slice(unsafe {
            std::slice::from_raw_parts((&base as *const DnsEvent).cast::<u8>(), std::mem::size_of::<DnsEvent>())
        });
        tail.extend_from_slice(&[0x45; 28]);
        tail.extend_from_slice(msg);
        tail.extend_from_slice(&[0; 4]); // perf pads the sample
        assert_eq!(decode_bytes(&tail), full);
        // Cut short: a decode error, never bytes from past the record.
        tail.truncate(std::mem::size_of::<DnsEvent>() + 30);
        let h: TapioHeader = read_record(&tail, "header").unwrap();
        assert!(decode(&h, &tail).is_err());
    }

    #[test]
    fn header_only_record_is_marked_truncated() {
        let bytes = record(DNS_QUERY, MSG, MSG.len() as u32, false);
        let h: TapioHeader = read_record(&bytes, "h").unwrap();
        let v = serde_json::to_value(decode(&h, &bytes).unwrap()).unwrap();
        assert_eq!(v["truncated"], true);
        assert_eq!(v["dns_id"], 0x1234);
        assert_eq!(v["qname"], serde_json::Value::Null);
        assert!(v.get("rcode").is_none() && v.get("latency_ns").is_none());
    }

    #[test]
    fn runt_reports_no_header_fields() {
        let mut bytes = record(DNS_RESPONSE, MSG, 11, false);
        // The probe's runt record: header-only, its DNS fields zero, flagged.
        let mut base: DnsEvent = read_record(&bytes, "dns_event").unwrap();
        (base.dns_id, base.dns_flags, base.qdcount, base.ancount, base.flags) = (0, 0, 0, 0, DNS_F_RUNT);
        // SAFETY: DnsEvent is repr(C) plain data; reading its bytes is sound.
        bytes.copy_from_slice(unsafe {
            std::slice::from_raw_parts((&base as *const DnsEvent).cast::<u8>(), std::mem::size_of::<DnsEvent>())
        });
        let h: TapioHeader = read_record(&bytes, "h").unwrap();
        let v = serde_json::to_value(decode(&h, &bytes).unwrap()).unwrap();
        assert_eq!(v["event"], "response");
        assert!(v.get("rcode").is_none() && v.get("answers").is_none(), "{v}");
        assert_eq!((v["qname"].is_null(), &v["truncated"]), (true, &serde_json::json!(true)));
        assert_eq!(v["malformed"], "message of 11 bytes is shorter than the 12-byte DNS header");
    }

    #[test]
    fn unknown_codes_are_numbers() {
        let mut m = MSG.to_vec();
        let n = m.len();
        m[n - 3] = 0x63; // qtype 99 is SPF; use 0x1063 = 4195
        m[n - 4] = 0x10;
        let bytes = record(DNS_QUERY, &m, m.len() as u32, true);
        let h: TapioHeader = read_record(&bytes, "h").unwrap();
        let v = serde_json::to_value(decode(&h, &bytes).unwrap()).unwrap();
        assert_eq!(v["qtype"], 0x1063);
    }
}
