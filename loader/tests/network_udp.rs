//! The network monitor's `udp_flow` events on the running kernel, loopback only: real `dig`
//! queries to a test-started `dnsmasq` over IPv4 and IPv6 (both ends, both directions), a flood
//! of queries on one socket folded into one event a direction, and the `dns_ports` knob deciding
//! which UDP traffic is a flow at all.
//!
//! Every `udp_flow` is emitted inside the syscall that sent or received the datagram, so once the
//! traffic's syscalls have returned its events are in the ring: `Loader::finish` drains them all
//! on SIGTERM, and an event missing then is missing, not late.

mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{dnsmasq::Dnsmasq, kernel_lock, skip_unless_root, Loader};
use serde_json::Value;

/// The longest any socket call of these tests may block.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `dig` with `args`; returns its pid (the tgid of its events) and its short answer.
fn dig(args: &[&str]) -> (u64, String) {
    let child = Command::new("dig")
        .args(args)
        .args(["+tries=1", "+time=2", "+short"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn dig (Debian package dnsutils)");
    let pid = u64::from(child.id());
    let out = child.wait_with_output().expect("wait dig");
    assert!(out.status.success(), "dig {args:?} failed: {}", String::from_utf8_lossy(&out.stdout));
    (pid, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `udp_flow` events of process `tgid` in `direction`.
fn flows<'a>(events: &'a [Value], tgid: u64, direction: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["monitor"] == "network" && e["event"] == "udp_flow" && e["tgid"] == tgid && e["direction"] == direction)
        .collect()
}

/// Whether `e` is a datagram from `from` to `to`.
fn carries(e: &Value, from: SocketAddr, to: SocketAddr) -> bool {
    e["saddr"] == from.ip().to_string() && e["sport"] == from.port() && e["daddr"] == to.ip().to_string() && e["dport"] == to.port()
}

/// The one event of `tgid` in `direction` for the datagram `from` -> `to`, checked field by field.
fn one_flow<'a>(events: &'a [Value], what: &str, tgid: u64, direction: &str, from: SocketAddr, to: SocketAddr) -> &'a Value {
    let all = flows(events, tgid, direction);
    let matching: Vec<&&Value> = all.iter().filter(|e| carries(e, from, to)).collect();
    assert_eq!(matching.len(), 1, "{what}: one {direction} {from} -> {to} of tgid {tgid}; its {direction} flows: {all:#?}");
    let e = *matching[0];
    let version = if from.is_ipv4() { 4 } else { 6 };
    assert_eq!((&e["protocol"], &e["ip_version"]), (&Value::from("udp"), &Value::from(version)), "{what}: {e}");
    assert_eq!(e["owner_known"], true, "{what}: a syscall's own process: {e}");
    assert_eq!(e["repeats"], 0, "{what}: the first datagram of its flow: {e}");
    assert!(e.get("oldstate").is_none() && e.get("bytes_sent").is_none(), "{what}: no TCP fields: {e}");
    e
}

/// dig's query and dnsmasq's answer, over 127.0.0.1 and ::1: dig's send and receive carry dig's
/// pid, dnsmasq's receive and send carry dnsmasq's, each with the sender's address and port
/// first, the server's port 53 on the right side, and dig's ephemeral port the same in all four.
#[test]
fn dig_and_dnsmasq_flows_both_ways_over_ipv4_and_ipv6() {
    if skip_unless_root("dig_and_dnsmasq_flows_both_ways_over_ipv4_and_ipv6") {
        return;
    }
    let _serial = kernel_lock();
    let server = Dnsmasq::start(&["--address=/tapio.test/10.1.2.3", "--address=/tapio.test/fd00::1"]);
    let server_pid = u64::from(server.pid());
    let loader = Loader::start(&["--monitors", "network"]);
    let cases = [("127.0.0.1", "A", "10.1.2.3"), ("::1", "AAAA", "fd00::1")];
    let runs: Vec<u64> = cases
        .iter()
        .map(|(at, qtype, answer)| {
            let (pid, out) = dig(&[&format!("@{at}"), "-p", "53", "tapio.test", qtype]);
            assert_eq!(out.trim(), *answer, "dig @{at} {qtype}");
            pid
        })
        .collect();
    let (events, stderr, status) = loader.finish();
    assert!(status.success(), "tapio-load exits 0 on SIGTERM: {status}; stderr:\n{stderr}");
    for ((at, qtype, _), dig_pid) in cases.iter().zip(runs) {
        let what = format!("dig @{at} {qtype} (pid {dig_pid}), dnsmasq (pid {server_pid})");
        let server_end: SocketAddr = SocketAddr::new(at.parse().unwrap(), 53);
        // dig's own send names its ephemeral port; every other event must agree with it.
        let sends = flows(&events, dig_pid, "send");
        assert_eq!(sends.len(), 1, "{what}: dig sends one query: {sends:#?}");
        let dig_port = sends[0]["sport"].as_u64().and_then(|p| u16::try_from(p).ok()).expect("a port");
        assert_ne!(dig_port, 0, "{what}: the connected socket's port is bound: {}", sends[0]);
        let dig_end = SocketAddr::new(at.parse().unwrap(), dig_port);
        one_flow(&events, &what, dig_pid, "send", dig_end, server_end);
        one_flow(&events, &what, server_pid, "receive", dig_end, server_end);
        one_flow(&events, &what, server_pid, "send", server_end, dig_end);
        one_flow(&events, &what, dig_pid, "receive", server_end, dig_end);
        assert_eq!(flows(&events, dig_pid, "receive").len(), 1, "{what}: dig receives one answer");
    }
    let left = common::programs_left_after("network_", Duration::from_secs(2));
    assert!(left.is_empty(), "programs left loaded after exit: {left:?}");
}

/// A DNS query for `tapio.test`, type A, with id `id`.
fn query(id: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(b"\x05tapio\x04test\x00\x00\x01\x00\x01");
    m
}

/// Sends `count` queries from `sock` (connected to dnsmasq) and reads every answer.
fn exchange(sock: &UdpSocket, first_id: u16, count: u16) {
    let mut buf = [0u8; 512];
    for id in first_id..first_id + count {
        sock.send(&query(id)).expect("send a query");
        let n = sock.recv(&mut buf).expect("dnsmasq answers");
        assert_eq!(&buf[..2], &id.to_be_bytes(), "answer {n} bytes for id {id:#x}");
    }
}

/// 100 queries and their answers on one socket, in well under the probe's one-second window:
/// one `udp_flow` per direction and end, not 100. Then queries one by one until the flow's
/// window has passed and its second send event comes: that event counts the datagrams folded
/// into the first (at least the flood's other 99, at most what was sent before it).
#[test]
fn a_flood_on_one_socket_is_one_flow_per_direction() {
    if skip_unless_root("a_flood_on_one_socket_is_one_flow_per_direction") {
        return;
    }
    let _serial = kernel_lock();
    let server = Dnsmasq::start(&["--address=/tapio.test/10.1.2.3"]);
    let server_pid = u64::from(server.pid());
    let loader = Loader::start(&["--monitors", "network"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect("127.0.0.1:53").unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let me = u64::from(std::process::id());
    let (client, server_end) = (sock.local_addr().unwrap(), "127.0.0.1:53".parse::<SocketAddr>().unwrap());

    const FLOOD: u16 = 100;
    let started = Instant::now();
    exchange(&sock, 0x4000, FLOOD);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "the flood must fit well inside the 1 s window to test it; took {took:?}");

    // Past the window: one query at a time until this flow's second send event is printed. The
    // probe emits it in the send itself, so each wait is on the loader's output, not a guess.
    let mut seen = Vec::new();
    let mut sent = u32::from(FLOOD);
    let second = loop {
        exchange(&sock, 0x5000 + sent as u16, 1);
        sent += 1;
        let hit = loader.wait_for(&mut seen, Duration::from_millis(100), |e| {
            e["event"] == "udp_flow" && e["tgid"] == me && e["direction"] == "send" && e["repeats"].as_u64().is_some_and(|r| r > 0)
        });
        if let Some(hit) = hit {
            break hit.event;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no second send event of the flow within 10 s: {seen:#?}");
    };
    let (rest, stderr, status) = loader.finish();
    seen.extend(rest);
    assert!(status.success(), "{stderr}");

    // The flood, inside the first window: one event per direction on each end.
    let first_window = |e: &&Value| e["repeats"] == 0;
    let count = |tgid: u64, direction: &str, from: SocketAddr, to: SocketAddr| {
        flows(&seen, tgid, direction).into_iter().filter(first_window).filter(|e| carries(e, from, to)).count()
    };
    assert_eq!(count(me, "send", client, server_end), 1, "client sends: {seen:#?}");
    assert_eq!(count(me, "receive", server_end, client), 1, "client receives: {seen:#?}");
    assert_eq!(count(server_pid, "receive", client, server_end), 1, "dnsmasq receives: {seen:#?}");
    assert_eq!(count(server_pid, "send", server_end, client), 1, "dnsmasq sends: {seen:#?}");
    // The window's count: the first event stood for the flood's 100 datagrams and the ones sent
    // one by one before the window ran out, so its repeats are at least 99, and at most every
    // datagram but the first and the one that opened the new window.
    assert!(carries(&second, client, server_end), "{second}");
    let repeats = second["repeats"].as_u64().unwrap();
    assert!(
        (u64::from(FLOOD) - 1..=u64::from(sent) - 2).contains(&repeats),
        "repeats {repeats} after {sent} sends, {FLOOD} of them in the flood: {second}"
    );
    let first_ts = flows(&seen, me, "send").iter().find(|e| e["repeats"] == 0).map(|e| e["ts_ns"].as_u64().unwrap()).unwrap();
    let gap = second["ts_ns"].as_u64().unwrap() - first_ts;
    assert!(gap >= 1_000_000_000, "a new event only once the window has passed: {gap} ns");
}

/// A UDP exchange on `port` of 127.0.0.1 between two unconnected sockets of this process
/// (sendto and recvfrom with addresses); returns (client, server) addresses.
fn exchange_on(port: u16) -> (SocketAddr, SocketAddr) {
    let server = UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&server, &client] {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    }
    let server_addr = server.local_addr().unwrap();
    client.send_to(&query(0x6100), server_addr).unwrap();
    let mut buf = [0u8; 512];
    let (_, from) = server.recv_from(&mut buf).expect("the query arrives");
    server.send_to(&buf[..12], from).unwrap();
    client.recv_from(&mut buf).expect("the answer arrives");
    (client.local_addr().unwrap(), server_addr)
}

/// A free UDP port on 127.0.0.1 (bound, then released for the test to bind again).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// With `--dns-ports` set to another port, an exchange on that port is a flow (both ends, both
/// directions), while a datagram to port 53 and an exchange on a port in no list are none.
#[test]
fn dns_ports_decides_which_udp_is_a_flow() {
    if skip_unless_root("dns_ports_decides_which_udp_is_a_flow") {
        return;
    }
    let _serial = kernel_lock();
    let (dns_port, other_port) = (free_udp_port(), free_udp_port());
    let loader = Loader::start(&["--monitors", "network", "--dns-ports", &dns_port.to_string()]);
    let me = u64::from(std::process::id());
    // Port 53 is not in the list now: a query there (nobody need answer) is no flow.
    let to_53 = UdpSocket::bind("127.0.0.1:0").unwrap();
    to_53.send_to(&query(0x6000), "127.0.0.8:53").unwrap();
    let (other_client, other_server) = exchange_on(other_port);
    let (client, server) = exchange_on(dns_port);
    let (events, stderr, status) = loader.finish();
    assert!(status.success(), "{stderr}");

    let what = format!("--dns-ports {dns_port}");
    one_flow(&events, &what, me, "send", client, server);
    one_flow(&events, &what, me, "receive", client, server);
    one_flow(&events, &what, me, "send", server, client);
    one_flow(&events, &what, me, "receive", server, client);
    let stray: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "udp_flow")
        .filter(|e| {
            let ports = [&e["sport"], &e["dport"]];
            ports.contains(&&Value::from(53)) || ports.contains(&&Value::from(other_port)) || e["daddr"] == "127.0.0.8"
        })
        .collect();
    assert!(stray.is_empty(), "no flow to port 53 or to {other_port} ({other_client} -> {other_server}): {stray:#?}");
}
