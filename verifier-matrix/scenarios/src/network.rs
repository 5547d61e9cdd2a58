//! network/tcp_loopback (and kernel/tcp_loopback): one TCP connection over 127.0.0.1 and one
//! over ::1, each with known payloads and an orderly close, seen by the network monitor (every
//! state change, bytes on close, the owner) and by the kernel monitor (connect, accept, close).
//!
//! The close order is fixed so the byte counts are too: the client half-closes (its FIN), the
//! server reads end-of-file and closes, and the client reads end-of-file before dropping its
//! socket. Dropping the client before the server's FIN arrived would let the kernel finish the
//! client's socket either before or after that FIN (orphaned FIN_WAIT2 sockets move to a
//! time-wait socket at once), so its `bytes_received` would count the FIN or not by chance.
//!
//! Where the kernel has fexit or kprobes, the network monitor also reports `connect_attempt`
//! (tcp_connect, in the client) and `accept_return` (inet_csk_accept, in the server), and the
//! accepted socket's later transitions carry the acceptor. Explicit checks prove the pid and the
//! full tuple of each; where the loader reported the event unavailable, the check is a skip with
//! the loader's reason, never a pass. `connect_attempt`'s `result` is checked there and left out
//! of the snapshot: fexit sees tcp_connect's return and the kprobe fallback cannot, so which path
//! won (a kernel capability the program lines report) would otherwise change the snapshot.

use std::{
    io::{self, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use serde_json::Value;
use tapio_decode::events::{kernel::KernelBody, Body, Event};
use tapio_runtime::monitors::LoadedMonitor;
use tapio_testkit::snapshot::Roles;

use super::{check, collect, current_exe, discard, lost, monitor, snapshot, Collected, EVENT_WAIT};
use tapio_matrix_protocol::Line;

use crate::Outcome;

const SCENARIO: &str = "tcp_loopback";
/// Payload the client sends, and the server.
const CLIENT_BYTES: usize = 100;
const SERVER_BYTES: usize = 50;
/// No blocking socket call of the scenario may wait longer than this.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The addresses and ports of one connection.
pub(super) struct Flow {
    pub(super) family: u8,
    pub(super) server: u16,
    pub(super) client: u16,
    pub(super) server_ip: IpAddr,
    pub(super) client_ip: IpAddr,
}

/// Runs one connection to `listener` (bound to an address and port, listening) from the calling
/// thread, both ends in this process; network/tcp_veth hands in a listener made in another
/// network namespace.
pub(super) fn connection(listener: TcpListener) -> io::Result<Flow> {
    let server_addr = listener.local_addr()?;
    let mut client = TcpStream::connect_timeout(&server_addr, IO_TIMEOUT)?;
    // The handshake is complete (connect returned), so the connection waits in the backlog.
    let (mut conn, _) = listener.accept()?;
    for s in [&client, &conn] {
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
    }
    let client_addr = client.local_addr()?;
    let flow = Flow {
        family: if server_addr.is_ipv4() { 4 } else { 6 },
        server: server_addr.port(),
        client: client_addr.port(),
        server_ip: server_addr.ip(),
        client_ip: client_addr.ip(),
    };
    client.write_all(&[b'c'; CLIENT_BYTES])?;
    let mut got = [0u8; CLIENT_BYTES];
    conn.read_exact(&mut got)?;
    conn.write_all(&[b's'; SERVER_BYTES])?;
    let mut got = [0u8; SERVER_BYTES];
    client.read_exact(&mut got)?;
    // The client's FIN, sent from this syscall: the probe remembers the socket's owner here.
    client.shutdown(Shutdown::Write)?;
    let eof = |s: &mut TcpStream, who: &str| -> io::Result<()> {
        let mut b = [0u8; 1];
        match s.read(&mut b)? {
            0 => Ok(()),
            n => Err(io::Error::other(format!("{who}: {n} unexpected bytes before end-of-file"))),
        }
    };
    eof(&mut conn, "server")?;
    drop(conn); // CLOSE_WAIT -> LAST_ACK, in this syscall
    eof(&mut client, "client")?; // the server's FIN is in: the client's socket has closed
    drop(client);
    drop(listener); // LISTEN -> CLOSE
    Ok(flow)
}

/// The ports of a TCP event of the network or kernel monitor. Only TCP: the network monitor's
/// `udp_flow` events (network/udp_dns) of other processes (the host row) may carry one of these
/// ports by chance, and they are no part of these scenarios' snapshots.
pub(super) fn flow_of(e: &Event) -> Option<(u16, u16)> {
    match &e.body {
        Body::Network(b) if b.flow.protocol == "tcp" => Some((b.flow.sport, b.flow.dport)),
        Body::Kernel(KernelBody::Sock { flow, .. }) => Some((flow.sport, flow.dport)),
        _ => None,
    }
}

/// Drives both connections and checks and snapshots what the two monitors saw.
pub fn run(out: &mut Outcome, loaded: &mut [LoadedMonitor]) {
    for name in ["network", "kernel"] {
        if let Some(m) = monitor(out, loaded, name, "network.tcp_loopback") {
            discard(m);
        }
    }
    let lost_before: Vec<u64> = loaded.iter().filter(|m| matches!(m.spec.name, "network" | "kernel")).map(lost).collect();
    let mut flows = Vec::new();
    for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
        match TcpListener::bind(SocketAddr::new(ip, 0)).and_then(connection) {
            Ok(f) => flows.push(f),
            Err(e) => check(out, &format!("network.{SCENARIO}.traffic_v{}", if ip.is_ipv4() { 4 } else { 6 }), false, format!("{ip}: {e}")),
        }
    }
    if flows.len() != 2 {
        return;
    }
    let ports: Vec<u16> = flows.iter().flat_map(|f| [f.server, f.client]).collect();
    let ours = |e: &Event| flow_of(e).is_some_and(|(s, d)| ports.contains(&s) || ports.contains(&d));
    // Each connection ends with three closes (listener, client, server side); the last of them
    // may complete in softirq after the final syscall returned.
    let closes = |events: &[Event]| events.iter().filter(|e| e.event == "close").count() >= 3 * flows.len();
    let me = std::process::id();
    let mut roles = Roles { pids: vec![(u64::from(me), "agent".to_owned())], exe: current_exe(), ports: Vec::new(), cgroups: crate::own_cgroups() };
    for f in &flows {
        roles.ports.push((f.server, format!("server_v{}", f.family)));
        roles.ports.push((f.client, format!("client_v{}", f.family)));
    }
    let paths: Vec<(&str, Result<String, String>)> = CALL_EVENTS
        .iter()
        .map(|&event| (event, loaded.iter().find(|m| m.spec.name == "network").map_or_else(|| Err("network monitor did not load".to_owned()), |m| call_path(m, event))))
        .collect();
    let lost_after: Vec<u64>;
    {
        let mut seen: Vec<(&'static str, Collected)> = Vec::new();
        for name in ["network", "kernel"] {
            let Some(m) = loaded.iter_mut().find(|m| m.spec.name == name) else { continue };
            seen.push((name, collect(m, ours, closes, EVENT_WAIT)));
        }
        lost_after = loaded.iter().filter(|m| matches!(m.spec.name, "network" | "kernel")).map(lost).collect();
        for (name, c) in &seen {
            let values = c.values();
            check(out, &format!("{name}.{SCENARIO}.decode"), c.errors.is_empty(), format!("{} events, errors: {:?}", values.len(), c.errors));
            for f in &flows {
                let detail = flow_checks(name, &values, f, me);
                check(out, &format!("{name}.{SCENARIO}.v{}", f.family), detail.is_empty(), detail.join("; "));
                if *name == "network" {
                    for (event, path) in &paths {
                        let check_name = format!("network.{SCENARIO}.{event}_v{}", f.family);
                        match path {
                            Ok(path) => {
                                let (pass, detail) = call_checks(event, path, &values, f, me);
                                check(out, &check_name, pass, detail);
                            }
                            Err(why) => out.line(&Line::skip(check_name, why, call_needs(event))),
                        }
                    }
                }
            }
            let values: Vec<Value> = values.into_iter().map(without_path_fields).collect();
            snapshot(out, name, SCENARIO, &values, &roles);
        }
    }
    let dropped: u64 = lost_after.iter().zip(&lost_before).map(|(a, b)| a - b).sum();
    check(out, &format!("network.{SCENARIO}.no_loss"), dropped == 0, format!("{dropped} records lost by network and kernel"));
}

/// The network events that come from kernel functions through fexit or kprobes, each the name of
/// its program group (loader/crates/catalog/src/network.rs).
pub(super) const CALL_EVENTS: [&str; 2] = ["connect_attempt", "accept_return"];

/// The attach path the loader took for one of [`CALL_EVENTS`], or why none attached.
pub(super) fn call_path(m: &LoadedMonitor, event: &str) -> Result<String, String> {
    let group = tapio_runtime::monitors::GROUPS.iter().find(|g| g.monitor == "network" && g.name == event);
    let Some(group) = group else { return Err(format!("no program group {event}")) };
    if let Some(r) = m.reports.iter().find(|r| group.programs.contains(&r.program)) {
        return Ok(r.path.clone());
    }
    Err(m.unavailable.iter().find(|(name, _)| *name == event).map_or_else(
        || format!("{event}: no path attached and none reported unavailable"),
        |(_, why)| format!("{event} unavailable: {why}"),
    ))
}

/// What one of [`CALL_EVENTS`] needs of the kernel: any path of its program group.
pub(super) fn call_needs(event: &str) -> tapio_matrix_protocol::Needs {
    tapio_runtime::monitors::monitor("network").map(|spec| tapio_runtime::monitors::needs_of(spec, event)).unwrap_or_default()
}

/// `connect_attempt`'s `result` is the one field whose presence depends on the path (see the
/// module docs); it is checked in [`call_checks`] and dropped from the snapshot.
pub(super) fn without_path_fields(mut v: Value) -> Value {
    if v["event"] == "connect_attempt" {
        if let Some(o) = v.as_object_mut() {
            o.remove("result");
        }
    }
    v
}

/// One [`CALL_EVENTS`] event of connection `f`, taken through `path`: the caller's pid, the full
/// tuple (the client's source port included), and what the path can tell.
pub(super) fn call_checks(event: &str, path: &str, events: &[Value], f: &Flow, me: u32) -> (bool, String) {
    // The client's socket is the local end of connect_attempt, the accepted socket of accept_return.
    let ((saddr, sport), (daddr, dport)) = if event == "connect_attempt" {
        ((f.client_ip.to_string(), f.client), (f.server_ip.to_string(), f.server))
    } else {
        ((f.server_ip.to_string(), f.server), (f.client_ip.to_string(), f.client))
    };
    let found = events.iter().find(|e| e["event"] == event && e["sport"] == sport && e["dport"] == dport);
    let Some(e) = found else {
        return (false, format!("via {path}: no {event} {saddr}:{sport} -> {daddr}:{dport}"));
    };
    let mut problems = Vec::new();
    let tuple = e["protocol"] == "tcp"
        && e["ip_version"] == f.family
        && e["saddr"] == saddr.as_str()
        && e["daddr"] == daddr.as_str();
    if !tuple || sport == 0 || dport == 0 {
        problems.push("tuple");
    }
    if !(e["pid"] == me && e["tgid"] == me && e["owner_known"] == true) {
        problems.push("caller");
    }
    match (event, path.starts_with("fexit:")) {
        ("connect_attempt", true) if e["result"] != 0 => problems.push("fexit result 0"),
        ("connect_attempt", false) if e.get("result").is_some() => problems.push("kprobe: no result"),
        _ => {}
    }
    // A call, not a transition: no states (accept's would race with the handshake's last step).
    if e.get("oldstate").is_some() || e.get("newstate").is_some() {
        problems.push("states");
    }
    if event == "accept_return" {
        // From accept() on, the accepted socket's softirq transitions carry the acceptor.
        let owned = events.iter().any(|x| {
            x["event"] == "state_change"
                && x["newstate"] == "CLOSE_WAIT"
                && x["sport"] == sport
                && x["dport"] == dport
                && x["tgid"] == me
                && x["owner_known"] == true
        });
        if !owned {
            problems.push("CLOSE_WAIT owner");
        }
    }
    let detail = format!("via {path}; {}: {e}", if problems.is_empty() { "ok".to_owned() } else { format!("wrong: {}", problems.join(", ")) });
    (problems.is_empty(), detail)
}

/// The key fields of one connection as one monitor saw it; returns the problems found.
pub(super) fn flow_checks(monitor: &str, events: &[Value], f: &Flow, me: u32) -> Vec<String> {
    let (client_addr, server_addr) = (f.client_ip.to_string(), f.server_ip.to_string());
    let find = |event: &str, sport: u16, dport: u16| {
        events.iter().find(|e| e["event"] == event && e["sport"] == sport && e["dport"] == dport)
    };
    let mut problems = Vec::new();
    let mut expect = |what: &str, ok: bool, e: Option<&Value>| {
        if !ok {
            problems.push(format!("{what}: {}", e.map_or("missing".to_owned(), Value::to_string)));
        }
    };
    // Local and remote addresses follow the side: the client's events have sport == client.
    let tuple_ok = |e: &Value| {
        let (local, remote) = if e["sport"] == f.client { (&client_addr, &server_addr) } else { (&server_addr, &client_addr) };
        e["protocol"] == "tcp" && e["ip_version"] == f.family && e["saddr"] == local.as_str() && e["daddr"] == remote.as_str()
    };
    let connect = find("connect", f.client, f.server);
    let accept = find("accept", f.server, f.client);
    let client_close = find("close", f.client, f.server);
    let server_close = find("close", f.server, f.client);
    let listener_close = find("close", f.server, 0);
    if monitor == "network" {
        // The client's socket has a known owner from connect() on; the server's from its close().
        let owned = |e: &Value| e["owner_known"] == true && e["tgid"] == me;
        expect("connect", connect.is_some_and(|e| tuple_ok(e) && owned(e) && e["oldstate"] == "SYN_SENT"), connect);
        expect("accept", accept.is_some_and(|e| tuple_ok(e) && e["oldstate"] == "SYN_RECV"), accept);
        // bytes_sent is tcp_sock.bytes_acked: payload plus an acknowledged SYN (the client's
        // own; the server socket is born after its SYN-ACK was acknowledged) and FIN;
        // bytes_received counts the payload and the peer's FIN.
        let bytes = |e: &Value, sent: usize, received: usize| e["bytes_sent"] == sent && e["bytes_received"] == received;
        expect(
            "client close",
            client_close.is_some_and(|e| tuple_ok(e) && owned(e) && bytes(e, CLIENT_BYTES + 2, SERVER_BYTES + 1)),
            client_close,
        );
        expect(
            "server close",
            server_close.is_some_and(|e| tuple_ok(e) && owned(e) && bytes(e, SERVER_BYTES + 1, CLIENT_BYTES + 1)),
            server_close,
        );
    } else {
        expect("connect", connect.is_some_and(tuple_ok), connect);
        expect("accept", accept.is_some_and(tuple_ok), accept);
        expect("client close", client_close.is_some_and(tuple_ok), client_close);
        expect("server close", server_close.is_some_and(tuple_ok), server_close);
    }
    expect("listener close", listener_close.is_some_and(|e| e["oldstate"] == "LISTEN"), listener_close);
    problems
}
