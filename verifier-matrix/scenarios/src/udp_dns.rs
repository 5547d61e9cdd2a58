//! network/udp_dns: the network monitor's `udp_flow` events of DNS traffic over 127.0.0.1 and
//! ::1. A responder thread of the agent answers on port 53 of both (the monitor's default DNS
//! port); the agent's main thread sends it [`QUERIES`] queries a family from one unconnected
//! socket (sendto with the server's address, recvfrom), all well inside the probe's one-second
//! window, and the same queries to a port in no DNS list.
//!
//! So each family's flow is seen four times, once per process end and direction: the client's
//! send and receive (the main thread) and the responder's receive and send (its thread), each with
//! the datagram's sender first and the repeats folded into the first event. The traffic to the
//! other port is no flow at all. The checks prove the thread of each event, both addresses and
//! ports and the direction; the snapshot names the threads and the client ports by role.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use serde_json::Value;
use tapio_decode::events::{Body, Event};
use tapio_runtime::monitors::LoadedMonitor;
use tapio_testkit::snapshot::Roles;

use super::{
    check, collect, current_exe, discard, dns::encode_query, dns::encode_response, gettid, lost, monitor, snapshot, EVENT_WAIT,
};
use crate::Outcome;

const SCENARIO: &str = "udp_dns";
const PORT: u16 = 53;
/// Queries a family sends on its one flow: the first is reported, the rest are repeats.
const QUERIES: u16 = 3;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const QTYPE_A: u16 = 1;

/// Loopback of each family.
const FAMILIES: [(u8, IpAddr); 2] = [(4, IpAddr::V4(Ipv4Addr::LOCALHOST)), (6, IpAddr::V6(Ipv6Addr::LOCALHOST))];

/// One family's exchange: the client's socket address, the server's, and the port in no list.
struct Run {
    family: u8,
    client: SocketAddr,
    server: SocketAddr,
    other: SocketAddr,
}

/// The responder: answers `QUERIES` queries on each socket, in family order, from its own thread.
fn serve(sockets: &[UdpSocket]) -> io::Result<u32> {
    let mut buf = [0u8; 512];
    for sock in sockets {
        for _ in 0..QUERIES {
            let (n, peer) = sock.recv_from(&mut buf)?;
            sock.send_to(&encode_response(&buf[..n], 0, &[&[192, 0, 2, 53]]), peer)?;
        }
    }
    Ok(gettid())
}

/// The client side of one family: the DNS exchange, then the same queries to a port in no list
/// (answered by `other`, so both directions of that traffic happen too).
fn client(ip: IpAddr, family: u8, other: &UdpSocket) -> io::Result<Run> {
    // Not a port the dns scenario's client just used: its flows would be folded into that one's.
    let sock = super::fresh_udp_client(ip)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    let server = SocketAddr::new(ip, PORT);
    let mut buf = [0u8; 512];
    for i in 0..QUERIES {
        sock.send_to(&encode_query(0x7000 + u16::from(family) * 0x10 + i, "udp.tapio.test", QTYPE_A), server)?;
        sock.recv_from(&mut buf)?;
    }
    let other_addr = other.local_addr()?;
    for i in 0..QUERIES {
        sock.send_to(&encode_query(0x7100 + i, "other.tapio.test", QTYPE_A), other_addr)?;
        let (n, peer) = other.recv_from(&mut buf)?;
        other.send_to(&buf[..n], peer)?;
        sock.recv_from(&mut buf)?;
    }
    Ok(Run { family, client: sock.local_addr()?, server, other: other_addr })
}

/// Drives both families, then checks and snapshots the network monitor's `udp_flow` events.
pub fn run(out: &mut Outcome, loaded: &mut [LoadedMonitor]) {
    let name = format!("network.{SCENARIO}");
    let Some(m) = monitor(out, loaded, "network", &name) else { return };
    let others = (|| -> io::Result<_> {
        let [o4, o6] = FAMILIES.map(|(_, ip)| UdpSocket::bind(SocketAddr::new(ip, 0)));
        let others = [o4?, o6?];
        for s in &others {
            s.set_read_timeout(Some(IO_TIMEOUT))?;
        }
        Ok(others)
    })();
    let others = match others {
        Ok(o) => o,
        Err(e) => return check(out, &format!("{name}.responder"), false, format!("bind the other ports: {e}")),
    };
    discard(m);
    let lost_before = lost(m);
    let traffic = std::thread::scope(|scope| {
        // The responder binds its own sockets: on the packet path an event names the thread that
        // created the socket, so this keeps the server's flows on the server's thread. The
        // clients start once it is bound, and a bind error is reported at once.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let responder = std::thread::Builder::new().name("tapio-udp-srv".to_owned()).spawn_scoped(scope, move || {
            let bound = (|| -> io::Result<[UdpSocket; 2]> {
                let [s4, s6] = FAMILIES.map(|(_, ip)| UdpSocket::bind(SocketAddr::new(ip, PORT)));
                let servers = [s4?, s6?];
                for s in &servers {
                    s.set_read_timeout(Some(IO_TIMEOUT))?;
                }
                Ok(servers)
            })();
            match bound {
                Ok(servers) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(&servers)
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("bind port {PORT}: {e}")));
                    Err(e)
                }
            }
        });
        let responder = responder.map_err(|e| format!("spawn: {e}"))?;
        ready_rx.recv().map_err(|_| "responder ended before binding".to_owned())??;
        let runs: Result<Vec<Run>, String> = FAMILIES
            .iter()
            .zip(&others)
            .map(|(&(family, ip), other)| client(ip, family, other).map_err(|e| format!("client v{family}: {e}")))
            .collect();
        let server_tid = responder.join().map_err(|_| "responder panicked".to_owned())?.map_err(|e| format!("responder: {e}"))?;
        Ok::<_, String>((runs?, server_tid))
    });
    let (runs, server_tid) = match traffic {
        Ok(t) => t,
        Err(e) => return check(out, &format!("{name}.traffic"), false, e),
    };
    let me = std::process::id();
    // Only this process's flows: on the host row other processes do DNS too. Every event was
    // emitted in a syscall that has returned, so all are in the ring: nothing is waited for.
    let udp = |e: &Event| e.tgid == me && e.event == "udp_flow" && matches!(&e.body, Body::Network(_));
    let c = collect(m, udp, |_| true, EVENT_WAIT);
    let dropped = lost(m) - lost_before;
    let values = c.values();
    check(out, &format!("{name}.decode"), c.errors.is_empty() && dropped == 0, format!("{} events, {dropped} lost, errors: {:?}", values.len(), c.errors));
    let client_tid = gettid();
    for r in &runs {
        let problems = flow_checks(&values, r, client_tid, server_tid);
        check(out, &format!("{name}.v{}", r.family), problems.is_empty(), problems.join("; "));
    }
    let others: Vec<u16> = runs.iter().map(|r| r.other.port()).collect();
    let stray: Vec<&Value> = values
        .iter()
        .filter(|v| others.iter().any(|p| v["sport"] == *p || v["dport"] == *p) || !(v["sport"] == PORT || v["dport"] == PORT))
        .collect();
    check(out, &format!("{name}.only_dns_ports"), stray.is_empty(), format!("flows off the DNS port: {stray:?}"));
    let roles = Roles {
        pids: vec![(u64::from(me), "agent".to_owned()), (u64::from(server_tid), "dns_server".to_owned())],
        exe: current_exe(),
        ports: runs.iter().map(|r| (r.client.port(), format!("client_v{}", r.family))).collect(),
        cgroups: crate::own_cgroups(),
    };
    snapshot(out, "network", SCENARIO, &values, &roles);
}

/// One family's four events: each (thread, direction) exactly once, from the datagram's sender to
/// its receiver, the first of its flow (no repeats before it), in the thread's own process.
fn flow_checks(values: &[Value], r: &Run, client_tid: u32, server_tid: u32) -> Vec<String> {
    let me = std::process::id();
    let expected = [
        ("client send", client_tid, "send", r.client, r.server),
        ("server receive", server_tid, "receive", r.client, r.server),
        ("server send", server_tid, "send", r.server, r.client),
        ("client receive", client_tid, "receive", r.server, r.client),
    ];
    let mut problems = Vec::new();
    for (what, tid, direction, from, to) in expected {
        let found: Vec<&Value> = values
            .iter()
            .filter(|v| v["pid"] == tid && v["direction"] == direction && v["ip_version"] == r.family)
            .filter(|v| (v["sport"] == from.port() && v["dport"] == to.port()) || (v["sport"] == to.port() && v["dport"] == from.port()))
            .collect();
        let ok = found.len() == 1 && {
            let v = found[0];
            v["tgid"] == me
                && v["protocol"] == "udp"
                && v["owner_known"] == true
                && v["repeats"] == 0
                && v["saddr"] == from.ip().to_string()
                && v["sport"] == from.port()
                && v["daddr"] == to.ip().to_string()
                && v["dport"] == to.port()
        };
        if !ok {
            problems.push(format!("{what} {from} -> {to} (tid {tid}, {QUERIES} datagrams): {found:?}"));
        }
    }
    problems
}
