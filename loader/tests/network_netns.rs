//! The network and kernel monitors across a veth pair between two network namespaces the test
//! creates: TCP over IPv4 and IPv6 addresses that exist only inside those namespaces, a
//! server in one and a client in the other, and the connect, accept and close events of both
//! ends with their real addresses and ports. Unlike loopback, the two ends are in different
//! namespaces, so a probe that read the tuple from the wrong side or the wrong namespace, or
//! assumed the family, reports a different address here.

mod common;

use std::{
    fs::File,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{kernel_lock, skip_unless_root, Loader};
use serde_json::Value;

/// Runs `ip` with `args`; panics with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (Debian package iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Two namespaces joined by a veth pair: `a` holds 10.200.0.1/30 and fd00:200::1/64, `b` holds
/// .2 and ::2. Dropping it (also while a failed test unwinds) deletes both namespaces, which
/// destroys the veth pair with them.
struct VethPair {
    a: String,
    b: String,
}

impl VethPair {
    const A4: &'static str = "10.200.0.1";
    const B4: &'static str = "10.200.0.2";
    const A6: &'static str = "fd00:200::1";
    const B6: &'static str = "fd00:200::2";

    fn create() -> Self {
        let id = std::process::id();
        let pair = Self { a: format!("tapio-a-{id}"), b: format!("tapio-b-{id}") };
        // Interface names are at most 15 bytes.
        let (va, vb) = (format!("tva{id}"), format!("tvb{id}"));
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        ip(&["link", "add", &va, "netns", &pair.a, "type", "veth", "peer", "name", &vb, "netns", &pair.b]);
        for (ns, dev, v4, v6) in [(&pair.a, &va, Self::A4, Self::A6), (&pair.b, &vb, Self::B4, Self::B6)] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/30"), "dev", dev]);
            // nodad: the address is usable at once, not tentative for a second of duplicate
            // address detection, so nothing has to wait for DAD.
            ip(&["-n", ns, "-6", "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        // A SYN sent before the carrier is up is lost and retried only after a second: wait
        // for both ends to be operationally up (and the v6 addresses not tentative) instead.
        let deadline = Instant::now() + Duration::from_secs(10);
        for (ns, dev) in [(&pair.a, &va), (&pair.b, &vb)] {
            loop {
                let out = Command::new("ip").args(["-n", ns, "-j", "addr", "show", "dev", dev]).output().expect("ip addr show");
                let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                let link = &v[0];
                let tentative = link["addr_info"].as_array().is_some_and(|a| a.iter().any(|i| i["tentative"] == true));
                if link["operstate"] == "UP" && !tentative {
                    break;
                }
                assert!(Instant::now() < deadline, "{dev} in {ns} not up within 10 s: {v}");
                thread::sleep(Duration::from_millis(10));
            }
        }
        pair
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has entered namespace `ns`: sockets it creates belong to that
/// namespace for their whole life, whichever thread later uses them. The test's own threads
/// stay in the initial namespace.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: a valid namespace fd; setns changes only this thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
}

/// One connection: the client's and the server's addresses, bytes each wrote.
struct Conn {
    client: SocketAddr,
    server: SocketAddr,
    up: u64,
    down: u64,
}

/// A listener on `server_ip` in `a`, a client connecting from `b`, `up` bytes to the server and
/// `down` back, then an orderly close (client first, server after reading its FIN).
fn exchange(pair: &VethPair, server_ip: IpAddr, up: usize, down: usize) -> Conn {
    let listener = in_netns(&pair.a, move || TcpListener::bind((server_ip, 0)).expect("bind in namespace a"));
    let server = listener.local_addr().unwrap();
    let mut client =
        in_netns(&pair.b, move || TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect from namespace b"));
    let (mut accepted, peer) = listener.accept().expect("accept");
    let client_addr = client.local_addr().unwrap();
    assert_eq!(peer, client_addr, "the server sees the client's own address: no NAT between the namespaces");
    client.write_all(&vec![b'u'; up]).unwrap();
    let mut buf = vec![0u8; up];
    accepted.read_exact(&mut buf).unwrap();
    accepted.write_all(&vec![b'd'; down]).unwrap();
    let mut buf = vec![0u8; down];
    client.read_exact(&mut buf).unwrap();
    drop(client);
    let mut rest = Vec::new();
    accepted.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(accepted);
    drop(listener);
    Conn { client: client_addr, server, up: up as u64, down: down as u64 }
}

fn tuple_is(e: &Value, local: SocketAddr, peer: SocketAddr) -> bool {
    e["saddr"] == local.ip().to_string()
        && e["sport"] == local.port()
        && e["daddr"] == peer.ip().to_string()
        && e["dport"] == peer.port()
}

fn find<'a>(events: &'a [Value], monitor: &str, event: &str, local: SocketAddr, peer: SocketAddr) -> &'a Value {
    let hits: Vec<&Value> =
        events.iter().filter(|e| e["monitor"] == monitor && e["event"] == event && tuple_is(e, local, peer)).collect();
    if hits.len() != 1 {
        let ours: Vec<&Value> = events.iter().filter(|e| e["monitor"] == monitor && e["event"] == event).collect();
        panic!("expected one {monitor} {event} for {local} -> {peer}, found {}; all {monitor} {event}: {ours:#?}", hits.len());
    }
    hits[0]
}

fn assert_bytes(e: &Value, field: &str, payload: u64) {
    let got = e[field].as_u64().unwrap_or_else(|| panic!("{field} missing: {e}"));
    assert!((payload..=payload + 2).contains(&got), "{field} = {got}, expected {payload} payload bytes (+ SYN/FIN): {e}");
}

fn check(events: &[Value], c: &Conn, ip_version: u64) {
    let me = std::process::id() as u64;
    let connect = find(events, "network", "connect", c.client, c.server);
    assert_eq!((connect["ip_version"].as_u64(), connect["protocol"].as_str()), (Some(ip_version), Some("tcp")), "{connect}");
    assert_eq!(connect["tgid"], me, "connect is attributed to the test, which connected: {connect}");
    let accept = find(events, "network", "accept", c.server, c.client);
    assert_eq!(accept["ip_version"], ip_version, "{accept}");
    let client_close = find(events, "network", "close", c.client, c.server);
    assert_bytes(client_close, "bytes_sent", c.up);
    assert_bytes(client_close, "bytes_received", c.down);
    let server_close = find(events, "network", "close", c.server, c.client);
    assert_bytes(server_close, "bytes_sent", c.down);
    assert_bytes(server_close, "bytes_received", c.up);
    for (event, local, peer) in
        [("connect", c.client, c.server), ("accept", c.server, c.client), ("close", c.client, c.server), ("close", c.server, c.client)]
    {
        let k = find(events, "kernel", event, local, peer);
        assert_eq!((k["ip_version"].as_u64(), k["protocol"].as_str()), (Some(ip_version), Some("tcp")), "{k}");
    }
}

#[test]
fn tcp_across_a_veth_pair_between_namespaces() {
    if skip_unless_root("tcp_across_a_veth_pair_between_namespaces") {
        return;
    }
    let _serial = kernel_lock();
    let pair = VethPair::create();
    let loader = Loader::start(&["--monitors", "network,kernel"]);
    let v4 = exchange(&pair, VethPair::A4.parse().unwrap(), 1500, 321);
    let v6 = exchange(&pair, VethPair::A6.parse().unwrap(), 7000, 99);
    assert_eq!(v4.client.ip().to_string(), VethPair::B4);
    assert_eq!(v6.client.ip().to_string(), VethPair::B6);

    let mut events = Vec::new();
    let last = loader.wait_for(&mut events, Duration::from_secs(5), |e| {
        e["monitor"] == "kernel" && e["event"] == "close" && tuple_is(e, v6.server, v6.client)
    });
    let (rest, stderr, status) = loader.finish();
    events.extend(rest);
    assert!(last.is_some(), "the IPv6 server close never arrived; stderr:\n{stderr}");
    assert!(status.success(), "{stderr}");
    check(&events, &v4, 4);
    check(&events, &v6, 6);
    drop(pair);
    assert!(
        !std::path::Path::new(&format!("/run/netns/tapio-a-{}", std::process::id())).exists(),
        "namespaces removed on drop"
    );
}
