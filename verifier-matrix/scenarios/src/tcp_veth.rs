//! network/tcp_veth: one TCP connection over IPv4 and one over IPv6 across a veth pair, the
//! server listening in a network namespace of its own and the client in the agent's, with the
//! payloads and the close order of network/tcp_loopback (network.rs explains why that order makes
//! the byte counts exact), seen by the network monitor.
//!
//! Unlike loopback, each end of the connection has its own address, so the checks prove that the
//! monitor puts each end's address and port on the right side of every event.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use tapio_decode::events::Event;
use tapio_runtime::monitors::LoadedMonitor;
use tapio_testkit::snapshot::Roles;

use super::{
    check, collect, current_exe, discard, lost, monitor,
    network::{connection, flow_checks, flow_of, without_path_fields},
    snapshot, veth, EVENT_WAIT,
};
use crate::Outcome;

const SCENARIO: &str = "tcp_veth";
/// RFC 2544 benchmarking addresses (198.18.0.0/15) and RFC 5180's IPv6 ones (2001:2::/48): the
/// host row puts the root end in the host's own namespace, where they collide with no real
/// network.
const ROOT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 70, 1);
const NS_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 70, 2);
const ROOT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x70, 0, 0, 0, 1);
const NS_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x70, 0, 0, 0, 2);

/// Drives both connections across the pair, then checks and snapshots what the network monitor
/// saw of them.
pub fn run(out: &mut Outcome, loaded: &mut [LoadedMonitor]) {
    let name = format!("network.{SCENARIO}");
    let Some(m) = monitor(out, loaded, "network", &name) else { return };
    let root_addrs = [(IpAddr::V4(ROOT_V4), 24), (IpAddr::V6(ROOT_V6), 64)];
    let ns_addrs = [(IpAddr::V4(NS_V4), 24), (IpAddr::V6(NS_V6), 64)];
    let Some(pair) = veth::pair_or_report(out, &name, "t", &root_addrs, &ns_addrs) else { return };
    discard(m);
    let lost_before = lost(m);
    let mut flows = Vec::new();
    for (server, client) in [(IpAddr::V4(NS_V4), IpAddr::V4(ROOT_V4)), (IpAddr::V6(NS_V6), IpAddr::V6(ROOT_V6))] {
        let family = if server.is_ipv4() { 4 } else { 6 };
        // Listening in the namespace; connecting, accepting and closing from this thread.
        let flow = pair
            .ns
            .run(|| TcpListener::bind(SocketAddr::new(server, 0)))
            .map_err(|e| e.to_string())
            .and_then(|bound| bound.map_err(|e| format!("listen on {server} in the namespace: {e}")))
            .and_then(|listener| connection(listener).map_err(|e| format!("{client} -> {server}: {e}")));
        match flow {
            Ok(f) => {
                let ends_ok = f.client_ip == client && f.server_ip == server && f.client != 0 && f.server != 0;
                let detail = format!("{}:{} -> {}:{} (want {client} -> {server})", f.client_ip, f.client, f.server_ip, f.server);
                check(out, &format!("{name}.endpoints_v{family}"), ends_ok, detail);
                flows.push(f);
            }
            Err(e) => check(out, &format!("{name}.traffic_v{family}"), false, e),
        }
    }
    if flows.len() != 2 {
        return;
    }
    let ports: Vec<u16> = flows.iter().flat_map(|f| [f.server, f.client]).collect();
    let ours = |e: &Event| flow_of(e).is_some_and(|(s, d)| ports.contains(&s) || ports.contains(&d));
    // Three closes a connection (listener, client, server), as in tcp_loopback.
    let closes = |events: &[Event]| events.iter().filter(|e| e.event == "close").count() >= 3 * flows.len();
    let seen = collect(m, ours, closes, EVENT_WAIT);
    let dropped = lost(m) - lost_before;
    // Every event is in: the pair can go (its sockets are all closed).
    drop(pair);
    let me = std::process::id();
    let values = seen.values();
    check(out, &format!("{name}.decode"), seen.errors.is_empty(), format!("{} events, errors: {:?}", values.len(), seen.errors));
    for f in &flows {
        let detail = flow_checks("network", &values, f, me);
        check(out, &format!("{name}.v{}", f.family), detail.is_empty(), detail.join("; "));
    }
    let mut roles = Roles { pids: vec![(u64::from(me), "agent".to_owned())], exe: current_exe(), ports: Vec::new(), cgroups: crate::own_cgroups() };
    for f in &flows {
        roles.ports.push((f.server, format!("server_v{}", f.family)));
        roles.ports.push((f.client, format!("client_v{}", f.family)));
    }
    // As in tcp_loopback: connect_attempt's `result` depends on the path that won (network.rs).
    let values: Vec<_> = values.into_iter().map(without_path_fields).collect();
    snapshot(out, "network", SCENARIO, &values, &roles);
    check(out, &format!("{name}.no_loss"), dropped == 0, format!("{dropped} records lost by network"));
}
