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
#[rstest::rstest]
#[case::ipv4("127.0.0.1", "A", "10.1.2.3")]
#[case::ipv6("::1", "AAAA", "fd00::1")]
fn dig_and_dnsmasq_flows_both_ways_over_ipv4_and_ipv6(#[case] at: &str, #[case] qtype: &str, #[case] answer: &str) {
    if skip_unless_root("dig_and_dnsmasq_flows_both_ways_over_ipv4_and_ipv6") {
        return;
    }
    let _serial = kernel_lock();
    let server = Dnsmasq::start(&["--address=/tapio.test/10.1.2.3", "--address=/tapio.test/fd00::1"]);
    let server_pid = u64::from(server.pid());
    let loader = Loader::start(&["--monitors", "network"]);
    let (dig_pid, out) = dig(&[&format!("@{at}"), "-p", "53", "tapio.test", qtype]);
    assert_eq!(out.trim(), answer, "dig @{at} {qtype}");
    let (events, stderr, status) = loader.finish();
    assert!(status.success(), "tapio-load exits 0 on SIGTERM: {status}; stderr:\n{stderr}");
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

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, so of every event's `ts_ns`.
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: t is a valid timespec to write.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) }, 0, "clock_gettime");
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The probe's dedup window, `NETWORK_UDP_WINDOW_NS` (probes/include/network.h).
const WINDOW_NS: u64 = 1_000_000_000;

/// When one datagram was sent: CLOCK_MONOTONIC just before and just after its send call; the
/// probe's own clock reading for it lies in between.
#[derive(Debug, Clone, Copy)]
struct Sent {
    before: u64,
    after: u64,
}

/// Sends one query from `sock` (connected to dnsmasq), reads its answer; when it was sent.
fn exchange_one(sock: &UdpSocket, id: u16) -> Sent {
    let mut buf = [0u8; 512];
    let before = monotonic_ns();
    sock.send(&query(id)).expect("send a query");
    let after = monotonic_ns();
    let n = sock.recv(&mut buf).expect("dnsmasq answers");
    assert_eq!(&buf[..2], &id.to_be_bytes(), "answer {n} bytes for id {id:#x}");
    Sent { before, after }
}

/// The events' `ts_ns`, in order.
fn timestamps(events: &[&Value]) -> Vec<u64> {
    let mut ts: Vec<u64> = events.iter().map(|e| e["ts_ns"].as_u64().expect("ts_ns")).collect();
    ts.sort_unstable();
    ts
}

/// 100 queries and their answers on one socket: each direction and end is reported once a
/// window, not once a datagram. Then queries one by one until the flow's window has passed and
/// its second send event comes: that event counts the datagrams folded into the first.
///
/// Nothing depends on how fast the machine is: the flood may span windows on a slow one. What
/// must hold is read from the events' own timestamps against the send times (CLOCK_MONOTONIC,
/// the probe's clock): a flow's events are a window or more apart, and the second send event's
/// `repeats` is at least the datagrams certainly sent inside the first window and at most those
/// that may have been.
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
    let mut sent: Vec<Sent> = (0..FLOOD).map(|i| exchange_one(&sock, 0x4000 + i)).collect();

    // Then one query at a time until this flow's second send event is printed. The probe emits
    // it in the send itself, so each wait is on the loader's output; a late line only means one
    // more query, which the bounds below account for.
    let mut seen = Vec::new();
    let started = Instant::now();
    let second = loop {
        let id = 0x5000 + sent.len() as u16;
        sent.push(exchange_one(&sock, id));
        let hit = loader.wait_for(&mut seen, Duration::from_millis(100), |e| {
            e["event"] == "udp_flow" && e["tgid"] == me && e["direction"] == "send" && e["repeats"].as_u64().is_some_and(|r| r > 0)
        });
        if let Some(hit) = hit {
            break hit.event;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no second send event of the flow after {} sends: {seen:#?}", sent.len());
    };
    let (rest, stderr, status) = loader.finish();
    seen.extend(rest);
    assert!(status.success(), "{stderr}");

    // Each direction on each end: at least one event, and no two within one window.
    let of = |tgid: u64, direction: &str, from: SocketAddr, to: SocketAddr| -> Vec<&Value> {
        flows(&seen, tgid, direction).into_iter().filter(|e| carries(e, from, to)).collect()
    };
    for (what, tgid, direction, from, to) in [
        ("client sends", me, "send", client, server_end),
        ("client receives", me, "receive", server_end, client),
        ("dnsmasq receives", server_pid, "receive", client, server_end),
        ("dnsmasq sends", server_pid, "send", server_end, client),
    ] {
        let events = of(tgid, direction, from, to);
        let ts = timestamps(&events);
        assert!(!ts.is_empty(), "{what}: no event: {seen:#?}");
        assert!(ts.windows(2).all(|w| w[1] - w[0] >= WINDOW_NS), "{what}: two events within one window: {events:#?}");
        let first = events.iter().find(|e| e["ts_ns"] == ts[0]).unwrap();
        assert_eq!(first["repeats"], 0, "{what}: the first event opens the flow: {events:#?}");
    }

    // The first window's count, carried by the second send event. The window opened at the
    // first datagram (its clock reading lies in [sent[0].before, first event's ts]): a datagram
    // whose send returned before sent[0].before + window was certainly folded into it, one whose
    // send began at or after first ts + window certainly was not.
    let sends = of(me, "send", client, server_end);
    let ts = timestamps(&sends);
    assert!(carries(&second, client, server_end), "{second}");
    // The first send event with repeats: the flow's second, unless every window before it held a
    // single datagram (each exchange slower than a window), which leaves nothing to count.
    let k = ts.iter().position(|t| Some(*t) == second["ts_ns"].as_u64()).expect("the second event is a send of the flow");
    if k > 1 {
        assert!(sends.iter().all(|e| e["repeats"] == 0 || e["ts_ns"].as_u64() >= Some(ts[k])), "{sends:#?}");
        return;
    }
    let (first_ts, window_from) = (ts[0], sent[0].before);
    let surely = sent[1..].iter().filter(|s| s.after < window_from + WINDOW_NS).count() as u64;
    let maybe = sent[1..].iter().filter(|s| s.before < first_ts + WINDOW_NS).count() as u64;
    let repeats = second["repeats"].as_u64().unwrap();
    assert!(
        (surely..=maybe).contains(&repeats),
        "repeats {repeats}: {surely} datagrams certainly and {maybe} possibly in the first window, of {} sent: {second}",
        sent.len()
    );
}

/// A UDP exchange with `server` (bound on 127.0.0.1) from a new unconnected socket of this
/// process (sendto and recvfrom with addresses); returns (client, server) addresses.
fn exchange_with(server: &UdpSocket) -> (SocketAddr, SocketAddr) {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [server, &client] {
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

/// A server socket on a free port of 127.0.0.1, held for the test: no other test or process can
/// take the port between choosing it and using it.
fn udp_server() -> (UdpSocket, u16) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a server socket");
    let port = sock.local_addr().unwrap().port();
    (sock, port)
}

/// With `--dns-ports` set to another port, an exchange on that port is a flow (both ends, both
/// directions), while a datagram to port 53 and an exchange on a port in no list are none.
#[test]
fn dns_ports_decides_which_udp_is_a_flow() {
    if skip_unless_root("dns_ports_decides_which_udp_is_a_flow") {
        return;
    }
    let _serial = kernel_lock();
    let ((dns_server, dns_port), (other_server, other_port)) = (udp_server(), udp_server());
    let loader = Loader::start(&["--monitors", "network", "--dns-ports", &dns_port.to_string()]);
    let me = u64::from(std::process::id());
    // Port 53 is not in the list now: a query there (nobody need answer) is no flow.
    let to_53 = UdpSocket::bind("127.0.0.1:0").unwrap();
    to_53.send_to(&query(0x6000), "127.0.0.8:53").unwrap();
    let (other_client, other_server) = exchange_with(&other_server);
    let (client, server) = exchange_with(&dns_server);
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

/// A socket nobody bound or connected gets its port from the kernel inside its first send
/// (autobind), after the send's entry: that first datagram must carry the real port, not 0, and
/// so be the same flow as the second. Two sendto()s to a server on a `--dns-ports` port: one
/// send event, with the port the kernel picked.
#[test]
fn an_unbound_socket_sends_with_its_real_port() {
    use std::os::fd::FromRawFd;

    if skip_unless_root("an_unbound_socket_sends_with_its_real_port") {
        return;
    }
    let _serial = kernel_lock();
    let (server, port) = udp_server();
    server.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let server_addr = server.local_addr().unwrap();
    let loader = Loader::start(&["--monitors", "network", "--dns-ports", &port.to_string()]);
    let me = u64::from(std::process::id());
    // SAFETY: socket() takes integers; a new fd is handed to the UdpSocket, which owns it.
    let client = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        UdpSocket::from_raw_fd(fd)
    };
    assert_eq!(client.local_addr().unwrap().port(), 0, "not bound yet");
    let mut buf = [0u8; 512];
    let mut seen_from = None;
    let sent: Vec<Sent> = (0..2u16)
        .map(|i| {
            let before = monotonic_ns();
            client.send_to(&query(0x7000 + i), server_addr).expect("sendto from the unbound socket");
            let after = monotonic_ns();
            seen_from = Some(server.recv_from(&mut buf).expect("the query arrives").1);
            Sent { before, after }
        })
        .collect();
    let client_addr = client.local_addr().unwrap();
    // The datagram's source as the server saw it: the port autobind picked, and the address
    // routing picked (the socket itself stays bound to 0.0.0.0).
    let from = seen_from.expect("two sends");
    assert_eq!(from.port(), client_addr.port());
    let (events, stderr, status) = loader.finish();
    assert!(status.success(), "{stderr}");

    let to_server: Vec<&Value> = flows(&events, me, "send").into_iter().filter(|e| e["dport"] == port).collect();
    assert!(to_server.iter().all(|e| e["sport"] != 0), "no send with port 0: {to_server:#?}");
    assert!(to_server.iter().all(|e| e["sport"] == client_addr.port()), "sport is {client_addr}'s: {to_server:#?}");
    // The second send is folded into the first's window unless it began a window after it.
    let want = if sent[1].after < sent[0].before + WINDOW_NS { 1 } else { 2 };
    assert_eq!(to_server.len(), want, "sends {sent:?}: {to_server:#?}");
    // The packet path reports the address on the wire, the syscall fallback the socket's own
    // (0.0.0.0: autobind picks a port, not an address).
    let packet_path = to_server.iter().any(|e| e["saddr"] != "0.0.0.0");
    one_flow(&events, "unbound socket's first sendto", me, "send", if packet_path { from } else { client_addr }, server_addr);
}
