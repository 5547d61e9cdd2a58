//! dns/hostile: a fake server on 127.0.0.1:53 and [::1]:53 inside the agent answers the agent's
//! own queries with hostile responses: a compression pointer to itself, a two-step pointer loop,
//! a pointer past the end of the message, a label running past the end, a name over 255 bytes,
//! and a response cut to 11 bytes (shorter than the DNS header). Valid exchanges come before
//! (so stale bytes of a whole response sit in the client's buffer when the runt lands there) and
//! after (the monitor still decodes normal traffic once the hostile ones went through).
//!
//! Client and server are sockets of the agent's main thread, used one step at a time, so every
//! message is seen twice (sent by one socket, received by the other) in a fixed order, with no
//! thread to wait for. The events go through the loader's correlator: each hostile response
//! still matches its query (its header is intact), the runt cannot (its id is not read), so the
//! runt's query is reported as a `timeout` on both ends.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, UdpSocket},
    time::Duration,
};

use serde_json::Value;
use tapio_decode::{dns::Correlator, events::Event};
use tapio_runtime::monitors::LoadedMonitor;
use tapio_testkit::snapshot::Roles;

use super::{
    check, collect, current_exe, discard,
    dns::{encode_query, encode_response},
    lost, monitor, snapshot, EVENT_WAIT,
};
use crate::Outcome;

const SCENARIO: &str = "hostile";
const PORT: u16 = 53;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The correlator's window. Nothing waits for it: the queries left open are expired at the
/// last event's time plus the window, which is when a running loader would report them.
const WINDOW: Duration = Duration::from_millis(200);
const QTYPE_A: u16 = 1;
const QTYPE_AAAA: u16 = 28;
/// The length the runt response is cut to: one byte short of the 12-byte header.
const RUNT_LEN: usize = 11;

/// What the server sends back for one query.
#[derive(Clone, Copy)]
enum Reply {
    /// A valid answer (one A or AAAA record whose name points at the question).
    Valid,
    /// The first RUNT_LEN bytes of a valid answer.
    Runt,
    /// A NOERROR header echoing the id, then these bytes as the question.
    Hostile(&'static [u8]),
    /// A question name of five 63-byte labels: 321 bytes in wire form, over the 255-byte limit
    /// of RFC 1035 2.3.4 yet inside the probe's 512-byte capture.
    LongName,
}

struct Case {
    id: u16,
    name: &'static str,
    v6: bool,
    reply: Reply,
    /// The decoder's error for the hostile response (`malformed`), checked exactly.
    malformed: Option<&'static str>,
}

const fn case(id: u16, name: &'static str, v6: bool, reply: Reply, malformed: Option<&'static str>) -> Case {
    Case { id, name, v6, reply, malformed }
}

const SCRIPT: &[Case] = &[
    case(0x7101, "before.tapio.test", false, Reply::Valid, None),
    case(0x7102, "runt.tapio.test", false, Reply::Runt, Some("message of 11 bytes is shorter than the 12-byte DNS header")),
    case(
        0x7103,
        "self-pointer.tapio.test",
        false,
        Reply::Hostile(b"\xc0\x0c\x00\x01\x00\x01"),
        Some("name: compression pointer at offset 12 to 12 does not point before 12"),
    ),
    case(
        0x7104,
        "loop.tapio.test",
        false,
        Reply::Hostile(b"\x03abc\xc0\x0c\x00\x01\x00\x01"),
        Some("name: compression pointer at offset 16 to 12 does not point before 12"),
    ),
    case(
        0x7105,
        "past-end-pointer.tapio.test",
        false,
        Reply::Hostile(b"\xc1\x00\x00\x01\x00\x01"),
        Some("name: compression pointer at offset 12 to 256 does not point before 12"),
    ),
    case(
        0x7106,
        "past-end-label.tapio.test",
        false,
        Reply::Hostile(b"\x3fabcde"),
        Some("name: byte at offset 75 is past the message end (18 bytes)"),
    ),
    case(0x7107, "long.tapio.test", false, Reply::LongName, Some("name: longer than 255 bytes")),
    case(
        0x7108,
        "self-pointer6.tapio.test",
        true,
        Reply::Hostile(b"\xc0\x0c\x00\x01\x00\x01"),
        Some("name: compression pointer at offset 12 to 12 does not point before 12"),
    ),
    case(0x7109, "after.tapio.test", false, Reply::Valid, None),
    case(0x710a, "after6.tapio.test", true, Reply::Valid, None),
];

impl Case {
    fn qtype(&self) -> u16 {
        if self.v6 { QTYPE_AAAA } else { QTYPE_A }
    }

    fn query(&self) -> Vec<u8> {
        encode_query(self.id, self.name, self.qtype())
    }

    fn response(&self, q: &[u8]) -> Vec<u8> {
        let valid = |q: &[u8]| {
            let rdata: &[u8] = if self.v6 { &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7] } else { &[192, 0, 2, 7] };
            encode_response(q, 0, &[rdata])
        };
        let header = |question: &[u8]| {
            let mut m = q[..2].to_vec();
            m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]);
            m.extend_from_slice(question);
            m
        };
        match self.reply {
            Reply::Valid => valid(q),
            Reply::Runt => valid(q)[..RUNT_LEN].to_vec(),
            Reply::Hostile(question) => header(question),
            Reply::LongName => {
                let mut question = Vec::new();
                for _ in 0..5 {
                    question.push(63);
                    question.extend_from_slice(&[b'x'; 63]);
                }
                question.extend_from_slice(&[0, 0, 1, 0, 1]);
                header(&question)
            }
        }
    }

    fn tag(&self) -> String {
        self.name.split('.').next().unwrap_or_default().replace('-', "_")
    }
}

/// Both ends of one family: the server on port 53 and a client connected to it.
struct Pair {
    server: UdpSocket,
    client: UdpSocket,
    /// Every read of the client lands here, so bytes of earlier replies stay behind shorter ones.
    buf: [u8; 1500],
}

impl Pair {
    fn bind(v6: bool) -> io::Result<Self> {
        let (server, client) = if v6 {
            (UdpSocket::bind((Ipv6Addr::LOCALHOST, PORT))?, UdpSocket::bind((Ipv6Addr::LOCALHOST, 0))?)
        } else {
            (UdpSocket::bind((Ipv4Addr::LOCALHOST, PORT))?, UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?)
        };
        client.connect(server.local_addr()?)?;
        server.set_read_timeout(Some(IO_TIMEOUT))?;
        client.set_read_timeout(Some(IO_TIMEOUT))?;
        Ok(Self { server, client, buf: [0; 1500] })
    }

    /// One exchange: the query out, the server's reply back. Checks both arrive intact.
    fn exchange(&mut self, c: &Case) -> io::Result<()> {
        let q = c.query();
        self.client.send(&q)?;
        let mut sbuf = [0u8; 512];
        let (n, from) = self.server.recv_from(&mut sbuf)?;
        if sbuf[..n] != q[..] {
            return Err(io::Error::other(format!("{}: the server received {n} bytes that are not the query", c.name)));
        }
        let r = c.response(&q);
        self.server.send_to(&r, from)?;
        let n = self.client.recv(&mut self.buf)?;
        if self.buf[..n] != r[..] {
            return Err(io::Error::other(format!("{}: the client received {n} bytes, not the {}-byte reply", c.name, r.len())));
        }
        Ok(())
    }
}

pub fn run(out: &mut Outcome, loaded: &mut [LoadedMonitor]) {
    let name = |what: &str| format!("dns.{SCENARIO}.{what}");
    let Some(m) = monitor(out, loaded, "dns", &format!("dns.{SCENARIO}")) else { return };
    discard(m);
    let lost_before = lost(m);
    let (mut v4, mut v6) = match (Pair::bind(false), Pair::bind(true)) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => return check(out, &name("server"), false, format!("bind port {PORT}: v4 {:?}, v6 {:?}", a.err(), b.err())),
    };
    let mut ports = Vec::new();
    for (pair, role) in [(&v4, "client_udp4"), (&v6, "client_udp6")] {
        match pair.client.local_addr() {
            Ok(a) => ports.push((a.port(), role.to_owned())),
            Err(e) => return check(out, &name("server"), false, format!("client address: {e}")),
        }
    }
    let mut failed = None;
    for c in SCRIPT {
        let pair = if c.v6 { &mut v6 } else { &mut v4 };
        if let Err(e) = pair.exchange(c) {
            failed = Some(e.to_string());
            break;
        }
    }
    check(out, &name("traffic"), failed.is_none(), failed.unwrap_or_else(|| format!("{} exchanges, every byte arrived", SCRIPT.len())));

    // Each message's event is emitted in the syscall that sent or received it: all are in the ring.
    let me = std::process::id();
    let c = collect(m, |e| e.tgid == me, |_| true, EVENT_WAIT);
    let dropped = lost(m) - lost_before;
    check(out, &name("decode"), c.errors.is_empty() && dropped == 0, format!("{} events, {dropped} lost, errors: {:?}", c.events.len(), c.errors));
    let mut events: Vec<Event> = c.events;
    events.sort_by_key(|e| e.ts_ns);
    let mut correlator = Correlator::new(WINDOW, 64);
    for e in &mut events {
        correlator.observe(e);
    }
    let last = events.last().map_or(0, |e| e.ts_ns);
    events.extend(correlator.expire(last.saturating_add(WINDOW.as_nanos() as u64)));
    let mut values: Vec<Value> = events.iter().map(|e| serde_json::to_value(e).expect("events serialize")).collect();
    key_checks(out, &values);

    // A runt's response cannot match its query (no id is read from 11 bytes): its latency is
    // null, which key_checks asserted; the normaliser refuses a null latency, so it is left out.
    for v in values.iter_mut().filter(|v| is_runt(v)) {
        if let Some(obj) = v.as_object_mut() {
            obj.remove("latency_ns");
        }
    }
    ports.sort();
    let roles = Roles { pids: vec![(u64::from(me), "agent".to_owned())], exe: current_exe(), ports, cgroups: crate::own_cgroups() };
    snapshot(out, "dns", SCENARIO, &values, &roles);
}

fn is_runt(v: &Value) -> bool {
    v["malformed"].as_str().is_some_and(|m| m.contains("shorter than the 12-byte DNS header"))
}

fn key_checks(out: &mut Outcome, values: &[Value]) {
    for c in SCRIPT {
        let qtype = if c.v6 { "AAAA" } else { "A" };
        let server = if c.v6 { "::1" } else { "127.0.0.1" };
        let of = |event: &str| values.iter().filter(|v| v["dns_id"] == c.id && v["event"] == event).collect::<Vec<_>>();
        let mut problems = Vec::new();
        // The query, as sent by the client and as received by the server: always decoded.
        let q = of("query");
        let good_query = |v: &Value| {
            v["qname"] == c.name && v["qtype"] == qtype && v["truncated"] == false && v["daddr"] == server && v["dport"] == 53
        };
        if !(q.len() == 2 && q.iter().all(|v| good_query(v))) {
            problems.push(format!("queries: {q:?}"));
        }
        let responses: Vec<&Value> = match c.reply {
            // The runt carries no readable id: it is found by its mark, and its query times out.
            Reply::Runt => {
                let t = of("timeout");
                if !(t.len() == 2 && t.iter().all(|v| good_query(v))) {
                    problems.push(format!("the runt's query must time out on both ends: {t:?}"));
                }
                values.iter().filter(|v| v["event"] == "response" && is_runt(v)).collect()
            }
            _ => of("response"),
        };
        let response_ok = |r: &Value| {
            let from_server = r["saddr"] == server && r["sport"] == 53;
            match (c.reply, c.malformed) {
                (Reply::Valid, _) => {
                    from_server
                        && r["qname"] == c.name
                        && r["qtype"] == qtype
                        && r["rcode"] == "NOERROR"
                        && r["answers"] == 1
                        && r["truncated"] == false
                        && r.get("malformed").is_none()
                        && r["latency_ns"].as_u64().is_some_and(|l| l > 0)
                }
                (Reply::Runt, Some(why)) => {
                    from_server && r["qname"].is_null() && r["truncated"] == true && r["malformed"] == why && r["latency_ns"].is_null()
                }
                (_, Some(why)) => {
                    from_server
                        && r["qname"].is_null()
                        && r["truncated"] == true
                        && r["malformed"] == why
                        && r["latency_ns"].as_u64().is_some_and(|l| l > 0)
                }
                (_, None) => false,
            }
        };
        if !(responses.len() == 2 && responses.iter().all(|r| response_ok(r))) {
            problems.push(format!("responses (sent and received): {responses:?}"));
        }
        check(out, &format!("dns.{SCENARIO}.{}", c.tag()), problems.is_empty(), problems.join("; "));
    }
    // Never a wrong name: every name reported is the one its own query asked for.
    let wrong: Vec<&Value> = values
        .iter()
        .filter(|v| match v["qname"].as_str() {
            None => false,
            Some(n) => SCRIPT.iter().find(|c| v["dns_id"] == c.id).is_none_or(|c| c.name != n),
        })
        .collect();
    check(out, &format!("dns.{SCENARIO}.no_wrong_name"), wrong.is_empty(), format!("names not asked for by their own query: {wrong:?}"));
    let timeouts = values.iter().filter(|v| v["event"] == "timeout").count();
    check(out, &format!("dns.{SCENARIO}.timeouts"), timeouts == 2, format!("{timeouts} timeouts (want 2: the runt's query on each end)"));
    let unmatched = values.iter().filter(|v| v["event"] == "response" && v["latency_ns"].is_null() && !is_runt(v)).count();
    check(out, &format!("dns.{SCENARIO}.correlation"), unmatched == 0, format!("{unmatched} responses other than the runt matched no query"));
}
