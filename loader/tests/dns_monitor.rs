//! The dns monitor on the running kernel, loopback only: real `dig` against `dnsmasq` over UDP
//! and TCP, IPv4 and IPv6; hostile responses from a responder of our own; an unanswered query.

mod common;

use std::{
    net::UdpSocket,
    process::{Command, Stdio},
    time::Duration,
};

use common::{dnsmasq::Dnsmasq, kernel_lock, skip_unless_root, Loader};
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

struct Case {
    args: &'static [&'static str],
    qname: &'static str,
    qtype: &'static str,
    rcode: &'static str,
    answers: u64,
    transport: &'static str,
    ip_version: u64,
    server: &'static str,
    answer: &'static str,
}

/// dig's queries and dnsmasq's answers: A, AAAA, NXDOMAIN, TCP and IPv6 all come out as a query
/// and a response of dig's process with the same id, the right fields and a positive latency.
#[test]
fn dig_queries_and_responses_are_matched() {
    if skip_unless_root("dig_queries_and_responses_are_matched") {
        return;
    }
    let _serial = kernel_lock();
    let _server = Dnsmasq::start(&["--address=/tapio.test/10.1.2.3", "--address=/tapio.test/fd00::1", "--address=/nx.test/"]);
    let loader = Loader::start(&["--monitors", "dns"]);
    let cases = [
        Case { args: &["@127.0.0.1", "-p", "53", "tapio.test", "A", "+short"], qname: "tapio.test", qtype: "A", rcode: "NOERROR", answers: 1, transport: "udp", ip_version: 4, server: "127.0.0.1", answer: "10.1.2.3" },
        Case { args: &["@127.0.0.1", "-p", "53", "tapio.test", "AAAA", "+short"], qname: "tapio.test", qtype: "AAAA", rcode: "NOERROR", answers: 1, transport: "udp", ip_version: 4, server: "127.0.0.1", answer: "fd00::1" },
        Case { args: &["@127.0.0.1", "-p", "53", "nope.nx.test", "A"], qname: "nope.nx.test", qtype: "A", rcode: "NXDOMAIN", answers: 0, transport: "udp", ip_version: 4, server: "127.0.0.1", answer: "NXDOMAIN" },
        Case { args: &["@127.0.0.1", "-p", "53", "tapio.test", "A", "+tcp", "+short"], qname: "tapio.test", qtype: "A", rcode: "NOERROR", answers: 1, transport: "tcp", ip_version: 4, server: "127.0.0.1", answer: "10.1.2.3" },
        Case { args: &["@::1", "-p", "53", "tapio.test", "AAAA", "+short"], qname: "tapio.test", qtype: "AAAA", rcode: "NOERROR", answers: 1, transport: "udp", ip_version: 6, server: "::1", answer: "fd00::1" },
        Case { args: &["@::1", "-p", "53", "tapio.test", "AAAA", "+tcp", "+short"], qname: "tapio.test", qtype: "AAAA", rcode: "NOERROR", answers: 1, transport: "tcp", ip_version: 6, server: "::1", answer: "fd00::1" },
    ];
    let mut runs = Vec::new();
    for case in &cases {
        let (pid, out) = dig(case.args);
        assert!(out.contains(case.answer), "dig {:?} answered {out}", case.args);
        runs.push(pid);
    }
    // Every dig has exited, so each of its records (and dnsmasq's, sent before dig read them) is
    // in the ring already; finish() drains it all on SIGTERM.
    let (events, stderr, status) = loader.finish();
    assert!(status.success(), "tapio-load exits 0 on SIGTERM: {status}; stderr:\n{stderr}");

    for (case, &pid) in cases.iter().zip(&runs) {
        let what = format!("dig {:?} (pid {pid})", case.args);
        let queries = dns_of(&events, pid, "query");
        let responses = dns_of(&events, pid, "response");
        assert_eq!(queries.len(), 1, "{what}: one query expected: {queries:?}");
        assert_eq!(responses.len(), 1, "{what}: one response expected: {responses:?}");
        let (q, r) = (&queries[0], &responses[0]);
        for e in [q, r] {
            assert_eq!(e["qname"], case.qname, "{what}: {e}");
            assert_eq!(e["qtype"], case.qtype, "{what}: {e}");
            assert_eq!(e["transport"], case.transport, "{what}: {e}");
            assert_eq!(e["ip_version"], case.ip_version, "{what}: {e}");
            assert_eq!(e["truncated"], false, "{what}: {e}");
            assert!(e.get("malformed").is_none(), "{what}: {e}");
        }
        assert_eq!(q["dns_id"], r["dns_id"], "{what}: ids must match");
        // The query goes to the server's port 53; the response comes from it (defect 4).
        assert_eq!((q["daddr"].as_str(), q["dport"].as_u64()), (Some(case.server), Some(53)), "{what}: {q}");
        assert_eq!((r["saddr"].as_str(), r["sport"].as_u64()), (Some(case.server), Some(53)), "{what}: {r}");
        assert_eq!(q["sport"], r["dport"], "{what}: the response returns to the query's port");
        assert!(q.get("rcode").is_none() && q.get("latency_ns").is_none(), "{what}: {q}");
        assert_eq!(r["rcode"], case.rcode, "{what}: {r}");
        assert_eq!(r["answers"], case.answers, "{what}: {r}");
        let latency = r["latency_ns"].as_u64().unwrap_or_else(|| panic!("{what}: response without latency: {r}"));
        assert!(latency > 0 && latency < 2_000_000_000, "{what}: latency {latency} ns");
        assert_eq!(
            latency,
            r["ts_ns"].as_u64().unwrap() - q["ts_ns"].as_u64().unwrap(),
            "{what}: latency is the time since the matching query"
        );
    }
    // dnsmasq is seen too, from the server side: it received the queries and sent the answers.
    assert!(
        events.iter().any(|e| e["comm"] == "dnsmasq" && e["event"] == "response" && e["sport"] == 53),
        "dnsmasq's own sends are missing"
    );
    let left = common::programs_left_after("dns_", Duration::from_secs(2));
    assert!(left.is_empty(), "programs left loaded after exit: {left:?}");
}

/// A query for `name` with id `id`, type A (the tests' shared builder).
fn query(id: u16, name: &str) -> Vec<u8> {
    common::dns_wire::query(id, name, 1)
}

/// A response header for `id` with one question and one answer, followed by `question`.
fn hostile(id: u16, question: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    m.extend_from_slice(question);
    m
}

/// Responses whose question name loops through compression pointers, points forward, or has a
/// label running past the message end come out marked (truncated, malformed, no name), and
/// never with a wrong name. The same run checks a query that nobody answers turns into a
/// `timeout` after the configured window.
#[test]
fn hostile_responses_and_timeouts() {
    if skip_unless_root("hostile_responses_and_timeouts") {
        return;
    }
    let _serial = kernel_lock();
    // Our own responder on 127.0.0.2:53 (all of 127/8 is loopback): dnsmasq never sends these.
    let server = UdpSocket::bind("127.0.0.2:53").expect("bind 127.0.0.2:53");
    let loader = Loader::start(&["--monitors", "dns", "--dns-timeout-ms", "300"]);
    let cases: [(u16, &str, Vec<u8>); 4] = [
        // A pointer to itself.
        (0x5101, "pointer loop", b"\xc0\x0c\x00\x01\x00\x01".to_vec()),
        // A label, then a pointer back to that label: a two-step loop.
        (0x5102, "label loop", b"\x03abc\xc0\x0c\x00\x01\x00\x01".to_vec()),
        // A label claiming 63 bytes in a message that ends after 5.
        (0x5103, "label past end", b"\x3fabcde".to_vec()),
        // A pointer forward, past the end.
        (0x5104, "forward pointer", b"\xc1\x00\x00\x01\x00\x01".to_vec()),
    ];
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect("127.0.0.2:53").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1500];
    for (id, what, question) in &cases {
        // send()/recv() on a connected socket: sendto and recvfrom with no address.
        client.send(&query(*id, "hostile.tapio.test")).unwrap();
        let (n, from) = server.recv_from(&mut buf).expect("responder receives the query");
        assert_eq!(n, query(*id, "hostile.tapio.test").len(), "{what}");
        server.send_to(&hostile(*id, question), from).unwrap();
        let n = client.recv(&mut buf).expect("client receives the hostile response");
        assert_eq!(&buf[..2], &id.to_be_bytes(), "{what}: {n} bytes");
    }
    // Unanswered: unconnected sendto() to a port-53 address where nothing listens.
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
    assert_eq!(t["qtype"], "A", "{t}");
    assert_eq!((t["daddr"].as_str(), t["dport"].as_u64()), (Some("127.0.0.3"), Some(53)), "peer from sendto's address: {t}");
    let (rest, stderr, status) = loader.finish();
    assert!(status.success(), "{stderr}");
    seen.extend(rest);
    let q = seen
        .iter()
        .find(|e| e["event"] == "query" && e["dns_id"] == 0x5199)
        .expect("the unanswered query itself");
    assert!(q["ts_ns"].as_u64().unwrap() + 300_000_000 <= t["ts_ns"].as_u64().unwrap(), "timeout before the window: {q} {t}");

    // Client and responder both live in this process, so each message is seen twice: sent by
    // one socket and received by the other (sendto/recvfrom with and without an address).
    for (id, what, _) in &cases {
        let mine = |kind: &str| -> Vec<&Value> {
            seen.iter().filter(|e| e["tgid"] == me && e["event"] == kind && e["dns_id"] == *id).collect()
        };
        let (qs, rs) = (mine("query"), mine("response"));
        assert_eq!(qs.len(), 2, "{what}: the query, sent and received: {qs:?}");
        for q in &qs {
            assert_eq!(q["qname"], "hostile.tapio.test", "{what}: {q}");
            assert_eq!((q["daddr"].as_str(), q["dport"].as_u64()), (Some("127.0.0.2"), Some(53)), "{what}: {q}");
        }
        assert_eq!(rs.len(), 2, "{what}: the hostile response, sent and received, must be reported: {seen:?}");
        for r in rs {
            assert_eq!(r["qname"], Value::Null, "{what}: never a wrong name: {r}");
            assert_eq!(r["truncated"], true, "{what}: {r}");
            assert!(r["malformed"].as_str().is_some_and(|m| m.starts_with("name:")), "{what}: {r}");
            assert_eq!((r["saddr"].as_str(), r["sport"].as_u64()), (Some("127.0.0.2"), Some(53)), "{what}: {r}");
            assert!(r["latency_ns"].as_u64().is_some(), "{what}: the hostile response still matches its query: {r}");
        }
    }
    // No query of ours other than the unanswered one timed out.
    let timeouts: Vec<_> = seen.iter().filter(|e| e["event"] == "timeout" && e["tgid"] == me && e["dns_id"] != 0x5199).collect();
    assert_eq!(timeouts.len(), 0, "answered queries must not time out: {timeouts:?}");
}
