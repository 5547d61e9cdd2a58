//! The dns monitor through the agent, loopback only. What the programs record is checked by the
//! shared scenarios (tapio-scenarios), run on this kernel by
//! verifier-matrix/guest/tests/scenarios.rs and in every VM of the matrix: dns.udp_tcp (A, AAAA,
//! NXDOMAIN, IPv6, TCP with its length prefix, ids, ports, latency, an unanswered query as a
//! timeout) and dns.hostile (compression pointer loops, pointers and labels past the end, a runt
//! response, over connected sockets).
//!
//! Here: real `dig` against `dnsmasq`, programs the scenarios do not have, through the agent's
//! correlator and output; and the agent's own `--dns-timeout-ms` turning an unanswered query into
//! a `timeout` record on stdout after that window, and no earlier.

mod common;

use std::{
    net::UdpSocket,
    process::{Command, Stdio},
    time::Duration,
};

use common::{dnsmasq::Dnsmasq, kernel_lock, skip_unless_root, Loader};
use rstest::rstest;
use serde_json::Value;

/// Runs `dig` with `args`; returns its pid (the tgid of its events) and its short answer.
fn dig(args: &[&str]) -> (u64, String) {
    let child = Command::new("dig")
        .args(args)
        .args(["+tries=1", "+time=2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn dig (Debian package dnsutils)");
    let pid = child.id() as u64;
    let out = child.wait_with_output().expect("wait dig");
    assert!(out.status.success(), "dig {args:?} failed: {}", String::from_utf8_lossy(&out.stdout));
    (pid, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn dns_of(events: &[Value], tgid: u64, kind: &str) -> Vec<Value> {
    events.iter().filter(|e| e["monitor"] == "dns" && e["tgid"] == tgid && e["event"] == kind).cloned().collect()
}

/// One dig query against dnsmasq through the agent: a query and a response of dig's process with
/// the same id, the answer's rcode, the latency the agent's correlator gives (the time since the
/// matching query), and dnsmasq's own answer seen from the server side.
#[rstest]
#[case::udp4_a(&["@127.0.0.1", "-p", "53", "tapio.test", "A", "+short"], "udp", "10.1.2.3", "NOERROR")]
#[case::udp4_aaaa(&["@127.0.0.1", "-p", "53", "tapio.test", "AAAA", "+short"], "udp", "fd00::1", "NOERROR")]
#[case::udp4_nxdomain(&["@127.0.0.1", "-p", "53", "nope.nx.test", "A"], "udp", "NXDOMAIN", "NXDOMAIN")]
#[case::tcp4_a(&["@127.0.0.1", "-p", "53", "tapio.test", "A", "+tcp", "+short"], "tcp", "10.1.2.3", "NOERROR")]
#[case::udp6_aaaa(&["@::1", "-p", "53", "tapio.test", "AAAA", "+short"], "udp", "fd00::1", "NOERROR")]
#[case::tcp6_aaaa(&["@::1", "-p", "53", "tapio.test", "AAAA", "+tcp", "+short"], "tcp", "fd00::1", "NOERROR")]
fn dig_against_dnsmasq_through_the_agent(#[case] args: &[&str], #[case] transport: &str, #[case] answer: &str, #[case] rcode: &str) {
    if skip_unless_root("dig_against_dnsmasq_through_the_agent") {
        return;
    }
    let _serial = kernel_lock();
    let _server = Dnsmasq::start(&["--address=/tapio.test/10.1.2.3", "--address=/tapio.test/fd00::1", "--address=/nx.test/"]);
    let loader = Loader::start(&["--monitors", "dns"]);
    let (pid, out) = dig(args);
    assert!(out.contains(answer), "dig {args:?} answered {out}");
    // dig has exited, so each of its records (and dnsmasq's, sent before dig read them) is in the
    // ring already; finish() drains it all on SIGTERM.
    let (events, stderr, status) = loader.finish();
    assert!(status.success(), "tapio-load exits 0 on SIGTERM: {status}; stderr:\n{stderr}");

    let what = format!("dig {args:?} (pid {pid})");
    let queries = dns_of(&events, pid, "query");
    let responses = dns_of(&events, pid, "response");
    assert_eq!(queries.len(), 1, "{what}: one query expected: {queries:?}");
    assert_eq!(responses.len(), 1, "{what}: one response expected: {responses:?}");
    let (q, r) = (&queries[0], &responses[0]);
    assert_eq!((&q["transport"], &r["transport"]), (&Value::from(transport), &Value::from(transport)), "{what}: {q} {r}");
    assert_eq!(q["dns_id"], r["dns_id"], "{what}: ids must match");
    assert_eq!(r["rcode"], rcode, "{what}: {r}");
    let latency = r["latency_ns"].as_u64().unwrap_or_else(|| panic!("{what}: response without latency: {r}"));
    assert!(latency > 0 && latency < 2_000_000_000, "{what}: latency {latency} ns");
    assert_eq!(
        latency,
        r["ts_ns"].as_u64().unwrap() - q["ts_ns"].as_u64().unwrap(),
        "{what}: latency is the time since the matching query"
    );
    // dnsmasq is seen too, from the server side: it received the query and sent the answer.
    assert!(
        events.iter().any(|e| e["comm"] == "dnsmasq" && e["event"] == "response" && e["sport"] == 53 && e["dns_id"] == q["dns_id"]),
        "{what}: dnsmasq's own send is missing"
    );
    let left = common::programs_left_after("dns_", Duration::from_secs(2));
    assert!(left.is_empty(), "programs left loaded after exit: {left:?}");
}

/// A query for `name` with id `id`, type A (the tests' shared builder).
fn query(id: u16, name: &str) -> Vec<u8> {
    common::dns_wire::query(id, name, 1)
}

/// `--dns-timeout-ms`: a query nobody answers comes out of the agent as a `timeout` record, not
/// before the configured window; an answered one does not.
#[test]
fn dns_timeout_through_the_agent() {
    if skip_unless_root("dns_timeout_through_the_agent") {
        return;
    }
    let _serial = kernel_lock();
    // Our own responder on 127.0.0.2:53 (all of 127/8 is loopback), answering one query.
    let server = UdpSocket::bind("127.0.0.2:53").expect("bind 127.0.0.2:53");
    let loader = Loader::start(&["--monitors", "dns", "--dns-timeout-ms", "300"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1500];
    client.send_to(&query(0x5101, "answered.tapio.test"), "127.0.0.2:53").unwrap();
    let (n, from) = server.recv_from(&mut buf).expect("responder receives the query");
    let mut reply = buf[..n].to_vec();
    reply[2] |= 0x80; // QR: a response, with the question and no answers
    server.send_to(&reply, from).unwrap();
    client.recv(&mut buf).expect("client receives the answer");
    // Unanswered: sendto() to a port-53 address where nothing listens.
    let lonely = UdpSocket::bind("127.0.0.1:0").unwrap();
    lonely.send_to(&query(0x5199, "silence.tapio.test"), "127.0.0.3:53").unwrap();

    let me = std::process::id() as u64;
    let mut seen = Vec::new();
    let timeout = loader
        .wait_for(&mut seen, Duration::from_secs(5), |e| e["event"] == "timeout" && e["dns_id"] == 0x5199)
        .unwrap_or_else(|| panic!("no timeout event for the unanswered query among {seen:?}"));
    let t = &timeout.event;
    assert_eq!(t["tgid"], me, "{t}");
    assert_eq!(t["qname"], "silence.tapio.test", "{t}");
    assert_eq!((t["daddr"].as_str(), t["dport"].as_u64()), (Some("127.0.0.3"), Some(53)), "peer from sendto's address: {t}");
    let (rest, stderr, status) = loader.finish();
    assert!(status.success(), "tapio-load exits 0 on SIGTERM: {status}; stderr:\n{stderr}");
    seen.extend(rest);
    let q = seen.iter().find(|e| e["event"] == "query" && e["dns_id"] == 0x5199).expect("the unanswered query itself");
    assert!(q["ts_ns"].as_u64().unwrap() + 300_000_000 <= t["ts_ns"].as_u64().unwrap(), "timeout before the window: {q} {t}");
    let answered = seen.iter().find(|e| e["event"] == "response" && e["dns_id"] == 0x5101 && e["tgid"] == me && e["sport"] == 53);
    assert!(answered.is_some_and(|r| r["latency_ns"].as_u64().is_some()), "the answer matches its query: {answered:?}");
    let timeouts: Vec<_> = seen.iter().filter(|e| e["event"] == "timeout" && e["tgid"] == me && e["dns_id"] != 0x5199).collect();
    assert_eq!(timeouts.len(), 0, "answered queries must not time out: {timeouts:?}");
}
