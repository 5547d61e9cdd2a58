//! The network monitor's records (probes/include/network.h, probes/include/sock.h) and their
//! decoding, plus the connection tuple the kernel monitor shares.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::{read_record, Body, DecodeError, Event, TapioHeader};
// The record mirrors and their C constants (probes/include/network.h).
use tapio_abi::network::*;


/// The connection fields every network and kernel socket record carries, as the contract names them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowFields {
    /// `tcp`, `udp` (the network monitor's `udp_flow`) or the IP protocol number.
    pub protocol: String,
    pub ip_version: u8,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
}

fn addr_text(addr: &TapioAddr, ip_version: u8) -> String {
    match ip_version {
        4 => Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string(),
        _ => Ipv6Addr::from(*addr).to_string(),
    }
}

fn protocol_name(protocol: u8) -> String {
    match protocol {
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        n => n.to_string(),
    }
}

impl From<&TapioFlow> for FlowFields {
    fn from(f: &TapioFlow) -> Self {
        Self {
            protocol: protocol_name(f.protocol),
            ip_version: f.ip_version,
            saddr: addr_text(&f.saddr, f.ip_version),
            sport: f.sport,
            daddr: addr_text(&f.daddr, f.ip_version),
            dport: f.dport,
        }
    }
}

/// Names of the kernel's TCP states (include/net/tcp_states.h), as `ss` prints them.
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// The network fields of an output record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NetworkBody {
    #[serde(flatten)]
    pub flow: FlowFields,
    /// The transition's states; absent on `connect_attempt` and `accept_return`, which are calls,
    /// not transitions. (The probe records the socket's state there, but at accept's return it is
    /// a race: the kernel queues a new socket for accept() in SYN_RECV and moves it to ESTABLISHED
    /// an instant later, so an accept() on another CPU can catch either.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldstate: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newstate: Option<&'static str>,
    /// Bytes the peer acknowledged (`tcp_sock.bytes_acked`, as `ss -i` shows it: sequence space,
    /// so an acknowledged SYN and FIN add 1 each to the payload); on `close` when readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
    /// Bytes received (`tcp_sock.bytes_received`, a received FIN adds 1); on `close` when readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_received: Option<u64>,
    /// Whether pid/tgid/comm/uid name the socket's owner (remembered at connect(), accept() or
    /// close()) rather than the task a softirq happened to interrupt.
    pub owner_known: bool,
    /// `connect_attempt` only: tcp_connect's return value (0, or -errno when the SYN could not be
    /// sent), when the fexit path saw it; absent through the kprobe path, which cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<i32>,
    /// `udp_flow` only: `send` when the process sent the datagram, `receive` when it received it.
    /// Either way `saddr`/`sport` is the datagram's sender and `daddr`/`dport` its destination,
    /// as in dns events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    /// `udp_flow` only: datagrams of the same flow (process, tuple, direction) that came within a
    /// second of this flow's previous `udp_flow` event and were counted into it instead of being
    /// reported; 0 on a flow's first event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeats: Option<u32>,
}

/// Decodes a network record whose header is already read.
pub fn decode(h: &TapioHeader, bytes: &[u8]) -> Result<Event, DecodeError> {
    let e: NetworkEvent = read_record(bytes, "network_event")?;
    let name = match h.kind {
        NETWORK_CONNECT => "connect",
        NETWORK_ACCEPT => "accept",
        NETWORK_CLOSE => "close",
        NETWORK_STATE_CHANGE => "state_change",
        NETWORK_CONNECT_ATTEMPT => "connect_attempt",
        NETWORK_ACCEPT_RETURN => "accept_return",
        NETWORK_UDP_FLOW => "udp_flow",
        kind => return Err(DecodeError::UnknownKind { monitor: "network", kind }),
    };
    let has_bytes = e.flags & NETWORK_F_BYTES != 0;
    let udp = h.kind == NETWORK_UDP_FLOW;
    let call = udp || matches!(h.kind, NETWORK_CONNECT_ATTEMPT | NETWORK_ACCEPT_RETURN);
    let received = udp && e.flags & NETWORK_F_RECV != 0;
    let mut flow = FlowFields::from(&e.flow);
    if received {
        // The record keeps this host's socket in s*; the output names the sender first.
        std::mem::swap(&mut flow.saddr, &mut flow.daddr);
        std::mem::swap(&mut flow.sport, &mut flow.dport);
    }
    let body = NetworkBody {
        flow,
        oldstate: (!call).then(|| tcp_state_name(e.oldstate)),
        newstate: (!call).then(|| tcp_state_name(e.newstate)),
        bytes_sent: has_bytes.then_some(e.bytes_sent),
        bytes_received: has_bytes.then_some(e.bytes_received),
        owner_known: e.flags & NETWORK_F_OWNER != 0,
        result: (h.kind == NETWORK_CONNECT_ATTEMPT && e.flags & NETWORK_F_RESULT_UNKNOWN == 0).then_some(e.result),
        direction: udp.then_some(if received { "receive" } else { "send" }),
        repeats: udp.then_some(e.repeats),
    };
    Ok(Event::from_header(h, "network", name, Body::Network(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_text() {
        let mut f = TapioFlow { ip_version: 4, protocol: 6, sport: 4242, dport: 80, ..Default::default() };
        f.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        f.daddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        let t = FlowFields::from(&f);
        assert_eq!((t.saddr.as_str(), t.daddr.as_str(), t.protocol.as_str()), ("127.0.0.1", "10.1.2.3", "tcp"));
        let mut f6 = TapioFlow { ip_version: 6, protocol: 6, ..Default::default() };
        f6.saddr[15] = 1;
        f6.daddr[10..16].copy_from_slice(&[0xff, 0xff, 192, 0, 2, 1]);
        let t = FlowFields::from(&f6);
        assert_eq!((t.saddr.as_str(), t.daddr.as_str()), ("::1", "::ffff:192.0.2.1"));
    }

    fn record(kind: u8, flags: u32, result: i32) -> Vec<u8> {
        let e = NetworkEvent {
            hdr: TapioHeader { monitor: 3, kind, ..Default::default() },
            flow: TapioFlow { ip_version: 4, protocol: 6, sport: 40000, dport: 80, ..Default::default() },
            oldstate: 2,
            newstate: 2,
            flags,
            result,
            ..Default::default()
        };
        // SAFETY: NetworkEvent is repr(C) plain data without implicit padding.
        unsafe { std::slice::from_raw_parts((&e as *const NetworkEvent).cast::<u8>(), std::mem::size_of::<NetworkEvent>()) }
            .to_vec()
    }

    fn body(kind: u8, flags: u32, result: i32) -> (&'static str, NetworkBody) {
        let bytes = record(kind, flags, result);
        let h: TapioHeader = read_record(&bytes, "tapio_header").unwrap();
        let e = decode(&h, &bytes).unwrap();
        match e.body {
            Body::Network(b) => (e.event, b),
            other => panic!("not a network body: {other:?}"),
        }
    }

    #[test]
    fn connect_attempt_carries_the_result_only_when_it_was_seen() {
        let (name, b) = body(NETWORK_CONNECT_ATTEMPT, NETWORK_F_OWNER, -111);
        assert_eq!((name, b.result, b.owner_known, b.newstate), ("connect_attempt", Some(-111), true, None));
        let (_, b) = body(NETWORK_CONNECT_ATTEMPT, NETWORK_F_OWNER | NETWORK_F_RESULT_UNKNOWN, 0);
        assert_eq!(b.result, None, "the kprobe path does not see tcp_connect's return");
        let json = serde_json::to_value(&b).unwrap();
        assert!(json.get("result").is_none(), "{json}");
        let (name, b) = body(NETWORK_ACCEPT_RETURN, NETWORK_F_OWNER, 0);
        assert_eq!((name, b.result), ("accept_return", None));
        let json = serde_json::to_value(&b).unwrap();
        assert!(json.get("oldstate").is_none() && json.get("newstate").is_none(), "a call is no transition: {json}");
        let (_, b) = body(NETWORK_CLOSE, 0, 7);
        assert_eq!(b.result, None, "only connect_attempt has a result");
        assert_eq!((b.oldstate, b.newstate), (Some("SYN_SENT"), Some("SYN_SENT")));
    }

    #[test]
    fn udp_flow_names_the_sender_first_in_both_directions() {
        let udp = |flags: u32| {
            let mut e = NetworkEvent {
                hdr: TapioHeader { monitor: 3, kind: NETWORK_UDP_FLOW, ..Default::default() },
                flow: TapioFlow { ip_version: 4, protocol: 17, sport: 40000, dport: 53, ..Default::default() },
                flags,
                repeats: 9,
                ..Default::default()
            };
            e.flow.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
            e.flow.daddr[..4].copy_from_slice(&[127, 0, 0, 53]);
            // SAFETY: NetworkEvent is repr(C) plain data without implicit padding.
            let bytes = unsafe {
                std::slice::from_raw_parts((&e as *const NetworkEvent).cast::<u8>(), std::mem::size_of::<NetworkEvent>())
            }
            .to_vec();
            let h: TapioHeader = read_record(&bytes, "tapio_header").unwrap();
            serde_json::to_value(decode(&h, &bytes).unwrap()).unwrap()
        };
        let sent = udp(NETWORK_F_SEND | NETWORK_F_OWNER);
        assert_eq!(
            (&sent["event"], &sent["protocol"], &sent["direction"], &sent["saddr"], &sent["sport"], &sent["daddr"], &sent["dport"]),
            (&"udp_flow".into(), &"udp".into(), &"send".into(), &"127.0.0.1".into(), &40000.into(), &"127.0.0.53".into(), &53.into()),
            "{sent}"
        );
        assert_eq!((&sent["repeats"], &sent["owner_known"]), (&9.into(), &true.into()), "{sent}");
        assert!(sent.get("oldstate").is_none() && sent.get("bytes_sent").is_none() && sent.get("result").is_none(), "{sent}");
        // Received on the socket 127.0.0.1:40000 from 127.0.0.53:53: the sender comes first.
        let got = udp(NETWORK_F_RECV | NETWORK_F_OWNER);
        assert_eq!(
            (&got["direction"], &got["saddr"], &got["sport"], &got["daddr"], &got["dport"]),
            (&"receive".into(), &"127.0.0.53".into(), &53.into(), &"127.0.0.1".into(), &40000.into()),
            "{got}"
        );
        let (_, tcp) = body(NETWORK_CLOSE, 0, 0);
        let tcp = serde_json::to_value(&tcp).unwrap();
        assert!(tcp.get("direction").is_none() && tcp.get("repeats").is_none(), "TCP events carry neither: {tcp}");
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let bytes = record(8, 0, 0);
        let h: TapioHeader = read_record(&bytes, "tapio_header").unwrap();
        assert_eq!(decode(&h, &bytes).unwrap_err(), DecodeError::UnknownKind { monitor: "network", kind: 8 });
    }

    #[test]
    fn short_record_is_refused() {
        let h = TapioHeader { monitor: 3, kind: NETWORK_CLOSE, ..Default::default() };
        let err = decode(&h, &[0u8; 60]).unwrap_err();
        assert!(matches!(err, DecodeError::Short { what: "network_event", .. }), "{err}");
    }
}
