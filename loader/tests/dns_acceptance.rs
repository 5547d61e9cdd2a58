//! The dns monitor's acceptance items of issue 5 that `dns_monitor.rs` does not hold: hostile
//! responses with a name over 255 bytes and a header cut short, an answer that really uses
//! compression pointers (from dnsmasq, over IPv4 and IPv6), and a flood of 100,000 unanswered
//! queries against the correlator's bound and the loader's memory. Loopback only.

mod common;

use std::{
    cell::Cell,
    io::{Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use common::{dns_wire::query, dnsmasq::Dnsmasq, kernel_lock, skip_unless_root, Loader};
use serde_json::Value;

/// A NOERROR response header for `id` with one question and no answers, then `question`.
fn response(id: u16, question: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(question);
    m
}

/// The question section of a well-formed query (everything after the 12-byte header).
fn question_of(msg: &[u8]) -> &[u8] {
    &msg[12..]
}

fn dns_events<'a>(events: &'a [Value], tgid: u64, kind: &str, id: u16) -> Vec<&'a Value> {
    events.iter().filter(|e| e["monitor"] == "dns" && e["tgid"] == tgid && e["event"] == kind && e["dns_id"] == id).collect()
}

/// A responder that answers a name over 255 bytes, then a header cut to 11 bytes, then a normal
/// answer. The long name comes out malformed with no name (never a wrong one). The runt is
/// built so that a probe reading past the syscall's length would find a whole, valid message
/// there: the runt is the first 11 bytes of a real response (the rest still sits in the send
/// buffer), and the client receives it into a buffer still holding the previous valid response.
/// Any event reported for it must therefore carry no name. The last, normal exchange proves
/// the probe and the loader are still working.
#[test]
fn long_name_and_runt_header_responses() {
    if skip_unless_root("long_name_and_runt_header_responses") {
        return;
    }
    let _serial = kernel_lock();
    // 127.0.0.4, not dns_monitor.rs's 127.0.0.2: another test binary may run at the same time.
    let server = UdpSocket::bind("127.0.0.4:53").expect("bind 127.0.0.4:53");
    let loader = Loader::start(&["--monitors", "dns", "--dns-timeout-ms", "300"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect("127.0.0.4:53").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut sbuf = [0u8; 1500];
    // One receive buffer for every client read, so stale bytes stay in it between reads.
    let mut cbuf = [0u8; 1500];

    // 1. A name of five 63-byte labels: 321 bytes in wire form, over the 255-byte limit
    // (RFC 1035 2.3.4) yet well inside the probe's 512-byte capture.
    let long_q = query(0x6101, "long.tapio.test", 1);
    client.send(&long_q).unwrap();
    let (_, from) = server.recv_from(&mut sbuf).expect("responder receives the long-name query");
    let mut long_name = Vec::new();
    for _ in 0..5 {
        long_name.push(63);
        long_name.extend_from_slice(&[b'x'; 63]);
    }
    long_name.extend_from_slice(&[0, 0, 1, 0, 1]);
    let long_r = response(0x6101, &long_name);
    server.send_to(&long_r, from).unwrap();
    assert_eq!(client.recv(&mut cbuf).unwrap(), long_r.len());

    // 2. A valid exchange that leaves a whole response with a name in the client's buffer.
    let before_q = query(0x6102, "before.tapio.test", 1);
    client.send(&before_q).unwrap();
    let (_, from) = server.recv_from(&mut sbuf).unwrap();
    let before_r = response(0x6102, question_of(&before_q));
    server.send_to(&before_r, from).unwrap();
    assert_eq!(client.recv(&mut cbuf).unwrap(), before_r.len());

    // 3. The runt: 11 bytes of a valid response for a new id.
    let runt_q = query(0x6103, "runt.tapio.test", 1);
    client.send(&runt_q).unwrap();
    let (_, from) = server.recv_from(&mut sbuf).unwrap();
    let runt_full = response(0x6103, question_of(&runt_q));
    server.send_to(&runt_full[..11], from).unwrap();
    assert_eq!(client.recv(&mut cbuf).unwrap(), 11, "the runt arrives as 11 bytes");
    assert_eq!(&cbuf[12..12 + question_of(&before_q).len()], question_of(&before_q), "stale bytes are in place");

    // 4. A normal exchange afterwards.
    let after_q = query(0x6104, "after.tapio.test", 28);
    client.send(&after_q).unwrap();
    let (_, from) = server.recv_from(&mut sbuf).unwrap();
    let after_r = response(0x6104, question_of(&after_q));
    server.send_to(&after_r, from).unwrap();
    assert_eq!(client.recv(&mut cbuf).unwrap(), after_r.len());

    let me = std::process::id() as u64;
    let mut seen = Vec::new();
    // The responder's send and the client's receive of the last response: two events.
    let count = Cell::new(0);
    let last = loader.wait_for(&mut seen, Duration::from_secs(5), |e| {
        if e["event"] == "response" && e["dns_id"] == 0x6104 && e["tgid"] == me {
            count.set(count.get() + 1);
        }
        count.get() == 2
    });
    let (rest, stderr, status) = loader.finish();
    seen.extend(rest);
    assert!(last.is_some(), "the normal response after the hostile ones was not reported twice; stderr:\n{stderr}");
    assert!(status.success(), "tapio-load stayed up and exits 0 on SIGTERM: {status}; stderr:\n{stderr}");

    // The long name: both ends' view of the response is reported, marked, without a name.
    let long = dns_events(&seen, me, "response", 0x6101);
    assert_eq!(long.len(), 2, "the long-name response, sent and received: {seen:?}");
    for r in long {
        assert_eq!(r["qname"], Value::Null, "never a wrong (cut or joined) name: {r}");
        assert_eq!(r["truncated"], true, "{r}");
        assert_eq!(r["malformed"], "name: longer than 255 bytes", "{r}");
        assert!(r["latency_ns"].as_u64().is_some(), "the long-name response still matches its query: {r}");
    }
    // The valid exchange before the runt is decoded normally (the comparison the runt needs).
    for r in dns_events(&seen, me, "response", 0x6102) {
        assert_eq!(r["qname"], "before.tapio.test", "{r}");
    }
    // The runt: its query is reported; whatever is reported for its 11-byte answer has no
    // name, in particular not the stale "before.tapio.test".
    assert_eq!(dns_events(&seen, me, "query", 0x6103).len(), 2, "the runt's query, sent and received");
    for r in dns_events(&seen, me, "response", 0x6103) {
        assert_eq!(r["qname"], Value::Null, "a runt header must not borrow a name from stale bytes: {r}");
        assert_eq!(r["truncated"], true, "{r}");
    }
    // The 11-byte answer itself is reported on both ends, marked truncated with the reason,
    // never dropped and never parsed (its id and flags cannot be trusted).
    let runts: Vec<&Value> = seen
        .iter()
        .filter(|e| {
            e["tgid"] == me
                && e["event"] == "response"
                && e["malformed"].as_str().is_some_and(|m| m.contains("11 bytes is shorter than the 12-byte DNS header"))
        })
        .collect();
    assert_eq!(runts.len(), 2, "the runt response, sent and received: {seen:?}");
    for r in &runts {
        assert_eq!(r["truncated"], true, "{r}");
        assert_eq!(r["qname"], Value::Null, "{r}");
    }
    let stale: Vec<_> = seen
        .iter()
        .filter(|e| e["tgid"] == me && e["qname"] == "before.tapio.test" && e["dns_id"] != 0x6102)
        .collect();
    assert!(stale.is_empty(), "stale buffer bytes reported as a message: {stale:?}");
    // After the hostile ones, a normal exchange is complete and correct.
    let q = dns_events(&seen, me, "query", 0x6104);
    assert_eq!(q.len(), 2, "{seen:?}");
    for r in dns_events(&seen, me, "response", 0x6104) {
        assert_eq!((r["qname"].as_str(), r["qtype"].as_str()), (Some("after.tapio.test"), Some("AAAA")), "{r}");
        assert_eq!(r["truncated"], false, "{r}");
        assert_eq!(r["rcode"], "NOERROR", "{r}");
        assert!(r["latency_ns"].as_u64().is_some_and(|l| l > 0 && l < 1_000_000_000), "{r}");
    }
}


/// Offsets of every compression pointer in the answer section of `msg` (after the one question),
/// in owner names and in CNAME data: proof that the answer really is compressed.
fn answer_pointers(msg: &[u8]) -> Vec<usize> {
    let mut at = 12;
    // Skip the question: an uncompressed name, type, class.
    while msg[at] != 0 {
        at += 1 + msg[at] as usize;
    }
    at += 5;
    let ancount = u16::from_be_bytes([msg[6], msg[7]]);
    let mut pointers = Vec::new();
    let name_at = |mut p: usize, pointers: &mut Vec<usize>| -> usize {
        loop {
            match msg[p] {
                0 => return p + 1,
                b if b & 0xc0 == 0xc0 => {
                    pointers.push(p);
                    return p + 2;
                }
                b => p += 1 + b as usize,
            }
        }
    };
    for _ in 0..ancount {
        at = name_at(at, &mut pointers);
        let rtype = u16::from_be_bytes([msg[at], msg[at + 1]]);
        let rdlen = u16::from_be_bytes([msg[at + 8], msg[at + 9]]) as usize;
        at += 10;
        if rtype == 5 {
            name_at(at, &mut pointers);
        }
        at += rdlen;
    }
    pointers
}

/// Real dnsmasq answers for a CNAME chain, over a server on 127.0.0.1 and one on ::1: the test
/// checks the bytes it received hold compression pointers in the answer (so the case is what
/// it claims), then that the probe's events for them carry the right name, type, rcode, answer
/// count, the same id and a latency under a second.
#[rstest::rstest]
#[case::ipv4("127.0.0.1", "127.0.0.1:0", 0x7101, 1, "A", 4)]
#[case::ipv6("::1", "[::1]:0", 0x7102, 28, "AAAA", 6)]
fn compressed_cname_answers_over_ipv4_and_ipv6(
    #[case] server: &str,
    #[case] bind: &str,
    #[case] id: u16,
    #[case] qtype: u16,
    #[case] qtype_name: &str,
    #[case] ip_version: u64,
) {
    if skip_unless_root("compressed_cname_answers_over_ipv4_and_ipv6") {
        return;
    }
    let _serial = kernel_lock();
    let _server = Dnsmasq::start(&["--host-record=tapio.test,10.1.2.3,fd00::1", "--cname=www.tapio.test,tapio.test"]);
    let loader = Loader::start(&["--monitors", "dns"]);
    let sock = UdpSocket::bind(bind).unwrap();
    sock.connect((server, 53)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send(&query(id, "www.tapio.test", qtype)).unwrap();
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).expect("dnsmasq answers");
    let msg = &buf[..n];
    assert_eq!(u16::from_be_bytes([msg[0], msg[1]]), id);
    assert_eq!(u16::from_be_bytes([msg[6], msg[7]]), 2, "CNAME + {qtype}: {msg:?}");
    let pointers = answer_pointers(msg);
    assert!(pointers.len() >= 2, "dnsmasq's answer to {server} uses compression pointers: {msg:?}");
    let port = sock.local_addr().unwrap().port();
    let me = std::process::id() as u64;
    let mut seen = Vec::new();
    loader.wait_for(&mut seen, Duration::from_secs(5), |e| e["tgid"] == me && e["event"] == "response" && e["dns_id"] == id);
    let (rest, stderr, status) = loader.finish();
    seen.extend(rest);
    assert!(status.success(), "{stderr}");
    let (q, r) = (dns_events(&seen, me, "query", id), dns_events(&seen, me, "response", id));
    assert_eq!((q.len(), r.len()), (1, 1), "one query and one response to {server}: {seen:?}");
    let (q, r) = (q[0], r[0]);
    for e in [q, r] {
        assert_eq!(e["qname"], "www.tapio.test", "{e}");
        assert_eq!(e["qtype"], qtype_name, "{e}");
        assert_eq!(e["ip_version"], ip_version, "{e}");
        assert_eq!(e["truncated"], false, "{e}");
    }
    assert_eq!((q["daddr"].as_str(), q["dport"].as_u64(), q["sport"].as_u64()), (Some(server), Some(53), Some(port as u64)), "{q}");
    assert_eq!((r["saddr"].as_str(), r["sport"].as_u64(), r["dport"].as_u64()), (Some(server), Some(53), Some(port as u64)), "{r}");
    assert_eq!(r["rcode"], "NOERROR", "{r}");
    assert_eq!(r["answers"], 2, "{r}");
    let latency = r["latency_ns"].as_u64().unwrap_or_else(|| panic!("unmatched: {r}"));
    assert!(latency > 0 && latency < 1_000_000_000, "{r}");
}

/// A port free right now (bound then released; the loader binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local addr").port()
}

/// The loader's /metrics page.
fn metrics(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect to metrics port {port}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_else(|| panic!("bad response {page:?}"))
}

/// The value of the sample named exactly `name` (labels included).
fn sample(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.rsplit_once(' ').filter(|(n, _)| *n == name))
        .and_then(|(_, v)| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{page}")) as u64
}

/// The pid of the `tapio-load` this process started (the only one: tests hold the kernel lock).
fn loader_pid() -> u32 {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // comm is in parentheses and may hold spaces; the ppid is the second field after it.
        let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") ")) else { continue };
        if comm == "tapio-load" && rest.split(' ').nth(1) == Some(&me.to_string()) {
            found.push(pid);
        }
    }
    assert_eq!(found.len(), 1, "exactly one tapio-load child: {found:?}");
    found[0]
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("loader's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Sends `count` queries from one unconnected socket to port 53 of two loopback addresses where
/// nothing listens, ids running from `first`, and returns once the loader has printed the last
/// one (or panics after a bounded wait). Two addresses make 131,072 distinct (id, peer) keys,
/// so no query replaces an earlier one in the table: each new one past the bound evicts.
/// Sends go in chunks, each awaited on the loader's output, so the 4 MiB ring (about 6,700
/// records) is not overrun and every query reaches the correlator.
fn flood(loader: &Loader, sock: &UdpSocket, first: u32, count: u32) -> u32 {
    const CHUNK: u32 = 4096;
    let me = std::process::id() as u64;
    let mut seen_queries = 0u32;
    let mut sent = 0;
    while sent < count {
        let n = CHUNK.min(count - sent);
        for i in first + sent..first + sent + n {
            let peer = if i & 0x10000 == 0 { "127.0.0.6:53" } else { "127.0.0.7:53" };
            // The error from an earlier ICMP port-unreachable is not reported on an
            // unconnected socket; a full send buffer would be, and is a failure.
            sock.send_to(&query(i as u16, "flood.tapio.test", 1), peer).expect("send a flood query");
        }
        sent += n;
        let last_id = (first + sent - 1) as u16;
        let last_peer = if (first + sent - 1) & 0x10000 == 0 { "127.0.0.6" } else { "127.0.0.7" };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Events are dropped as they are counted: 100,000 of them need not be kept.
            let mut seen = Vec::new();
            let hit = loader.wait_for(&mut seen, Duration::from_millis(500), |e| {
                e["event"] == "query" && e["tgid"] == me && e["dns_id"] == last_id && e["daddr"] == last_peer
            });
            seen_queries += seen.iter().filter(|e| e["event"] == "query" && e["tgid"] == me && e["qname"] == "flood.tapio.test").count() as u32;
            if hit.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "the loader did not print query {last_id:#x} within 30 s");
        }
    }
    seen_queries
}

/// 100,000 unanswered queries: the correlator holds exactly its bound (16384) pending, counts
/// the rest as evicted, and the loader's resident memory stays within 20 MiB of what it was
/// before (unbounded, 100,000 pending queries would cost several times that). Half-way, the
/// table is already full, and the second half adds no more than 4 MiB: memory is flat while
/// the flood goes on. The window is a minute so nothing leaves the table by timing out.
///
/// The kernel side needs no such test: the only per-query state there is `dns_recv_inflight`,
/// an LRU hash of 8192 entries keyed by thread and holding a receive only between a recv
/// syscall's entry and exit; a send keeps nothing. Its size is fixed when the map is created.
#[test]
fn flood_of_unanswered_queries_is_bounded() {
    if skip_unless_root("flood_of_unanswered_queries_is_bounded") {
        return;
    }
    let _serial = kernel_lock();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let loader = Loader::start(&[
        "--monitors",
        "dns",
        "--dns-timeout-ms",
        "60000",
        "--ring-size",
        "4194304",
        "--metrics-address",
        &address,
    ]);
    let pid = loader_pid();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Warm-up: the run loop, the JSON writer and the ring pages have been used once.
    // Ids 0xf000.. to 127.0.0.7: keys the flood below never reuses.
    let warm = flood(&loader, &sock, 0x1_f000, 1000);
    assert_eq!(warm, 1000, "every warm-up query reached the loader");
    let page = metrics(port);
    let capacity = sample(&page, "tapio_dns_inflight_capacity");
    assert_eq!(capacity, 16384, "the configured bound (crate::dns::DEFAULT_CAPACITY)");
    assert_eq!(sample(&page, "tapio_dns_inflight"), 1000, "{page}");
    let rss_before = vm_rss_kib(pid);

    let half = flood(&loader, &sock, 0, 50_000);
    let page = metrics(port);
    let rss_half = vm_rss_kib(pid);
    assert_eq!(sample(&page, "tapio_dns_inflight"), capacity, "full half-way: {page}");
    let rest = flood(&loader, &sock, 50_000, 50_000);
    let seen = u64::from(warm + half + rest);
    assert!(seen >= 101_000, "every flood query reached the loader: {seen}");

    let page = metrics(port);
    let rss_after = vm_rss_kib(pid);
    let inflight = sample(&page, "tapio_dns_inflight");
    let evicted = sample(&page, "tapio_dns_inflight_evicted_total");
    assert_eq!(inflight, capacity, "the table sits at its bound: {page}");
    // Other processes' DNS traffic may add queries, never remove evictions.
    assert!(evicted >= seen - capacity, "evicted {evicted} of {seen} queries past the bound {capacity}");
    assert_eq!(sample(&page, "tapio_events_lost_total{monitor=\"dns\"}"), 0, "{page}");
    println!("VmRSS before {rss_before} KiB, half-way {rss_half} KiB, after {rss_after} KiB");
    // The full table's own cost: 16,384 queries (about 24 MiB in this debug build). The agent
    // returns its load-time heap at start (run/load.rs, return_startup_heap), so the table is paid in
    // new pages rather than in heap left over from loading. Bounded is the second half's check.
    assert!(rss_after <= rss_before + 40 * 1024, "loader RSS grew from {rss_before} KiB to {rss_after} KiB");
    assert!(rss_after <= rss_half + 4 * 1024, "loader RSS grew from {rss_half} KiB to {rss_after} KiB in the second half");

    let (_, stderr, status) = loader.finish();
    assert!(status.success(), "{stderr}");
}
