//! network/tcp_loopback (and kernel/tcp_loopback): one TCP connection over 127.0.0.1 and one
//! over ::1, each with known payloads and an orderly close, seen by the network monitor (every
//! state change, bytes on close, the owner) and by the kernel monitor (connect, accept, close).
//!
//! The close order is fixed so the byte counts are too: the client half-closes (its FIN), the
//! server reads end-of-file and closes, and the client reads end-of-file before dropping its
//! socket. Dropping the client before the server's FIN arrived would let the kernel finish the
//! client's socket either before or after that FIN (orphaned FIN_WAIT2 sockets move to a
//! time-wait socket at once), so its `bytes_received` would count the FIN or not by chance.

use std::{
    io::{self, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use serde_json::Value;
use tapio_load::{
    events::{kernel::KernelBody, Body, Event},
    monitors::LoadedMonitor,
    snapshot::Roles,
};

use super::{check, collect, current_exe, discard, lost, monitor, snapshot, Collected, EVENT_WAIT};
use crate::report::Reporter;

const SCENARIO: &str = "tcp_loopback";
/// Payload the client sends, and the server.
const CLIENT_BYTES: usize = 100;
const SERVER_BYTES: usize = 50;
/// No blocking socket call of the scenario may wait longer than this.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The ports of one connection.
struct Flow {
    family: u8,
    server: u16,
    client: u16,
}

/// Runs one connection over `ip` from the calling thread, both ends in this process.
fn connection(ip: IpAddr) -> io::Result<Flow> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))?;
    let server_addr = listener.local_addr()?;
    let mut client = TcpStream::connect_timeout(&server_addr, IO_TIMEOUT)?;
    // The handshake is complete (connect returned), so the connection waits in the backlog.
    let (mut conn, _) = listener.accept()?;
    for s in [&client, &conn] {
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
    }
    let flow = Flow { family: if ip.is_ipv4() { 4 } else { 6 }, server: server_addr.port(), client: client.local_addr()?.port() };
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

fn flow_of(e: &Event) -> Option<(u16, u16)> {
    match &e.body {
        Body::Network(b) => Some((b.flow.sport, b.flow.dport)),
        Body::Kernel(KernelBody::Sock { flow, .. }) => Some((flow.sport, flow.dport)),
        _ => None,
    }
}

/// Drives both connections and checks and snapshots what the two monitors saw.
pub fn run(out: &mut Reporter, loaded: &mut [LoadedMonitor]) {
    for name in ["network", "kernel"] {
        if let Some(m) = monitor(out, loaded, name, "network.tcp_loopback") {
            discard(m);
        }
    }
    let lost_before: Vec<u64> = loaded.iter().filter(|m| matches!(m.spec.name, "network" | "kernel")).map(lost).collect();
    let mut flows = Vec::new();
    for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
        match connection(ip) {
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
    let mut roles = Roles { pids: vec![(u64::from(me), "agent".to_owned())], exe: current_exe(), ports: Vec::new() };
    for f in &flows {
        roles.ports.push((f.server, format!("server_v{}", f.family)));
        roles.ports.push((f.client, format!("client_v{}", f.family)));
    }
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
            }
            snapshot(out, name, SCENARIO, &values, &roles);
        }
    }
    let dropped: u64 = lost_after.iter().zip(&lost_before).map(|(a, b)| a - b).sum();
    check(out, &format!("network.{SCENARIO}.no_loss"), dropped == 0, format!("{dropped} records lost by network and kernel"));
}

/// The key fields of one connection as one monitor saw it; returns the problems found.
fn flow_checks(monitor: &str, events: &[Value], f: &Flow, me: u32) -> Vec<String> {
    let addr = if f.family == 4 { "127.0.0.1" } else { "::1" };
    let find = |event: &str, sport: u16, dport: u16| {
        events.iter().find(|e| e["event"] == event && e["sport"] == sport && e["dport"] == dport)
    };
    let mut problems = Vec::new();
    let mut expect = |what: &str, ok: bool, e: Option<&Value>| {
        if !ok {
            problems.push(format!("{what}: {}", e.map_or("missing".to_owned(), Value::to_string)));
        }
    };
    let tuple_ok = |e: &Value| {
        e["protocol"] == "tcp" && e["ip_version"] == f.family && e["saddr"] == addr && e["daddr"] == addr
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
