//! dns/udp_tcp: a responder thread inside the agent on 127.0.0.1:53 (UDP and TCP) and [::1]:53
//! (UDP), and queries from the agent's main thread, both ends seen by the dns monitor.
//!
//! The exchanges cover what the spec's dns defects broke: answers whose names are compression
//! pointers, AAAA, NXDOMAIN, a query over IPv6, a query over TCP with its 2-byte length prefix
//! (sent in the same buffer as the message; read by the server apart from it, as glibc does), and
//! one query never answered. The events go through the loader's own correlator
//! ([`tapio_decode::dns::Correlator`], as `tapio-load run` drives it), so every response must carry
//! a positive latency (the normaliser refuses a null one) and the unanswered query must come back
//! as `timeout` events: a regression in matching or in reading responses changes the snapshot.

use std::{
    io::{self, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use serde_json::Value;
use tapio_decode::{dns::{monotonic_ns, Correlator}, events::{Body, Event}};
use tapio_runtime::monitors::LoadedMonitor;
use tapio_testkit::snapshot::Roles;

use super::{check, collect, current_exe, discard, gettid, lost, monitor, snapshot, EVENT_WAIT};
use crate::Outcome;

const SCENARIO: &str = "udp_tcp";
const PORT: u16 = 53;
/// Longest wait of any socket call of the scenario.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The correlator's window, and how long the client waits for the unanswered query: the wait
/// is longer, so when it ends the query's window has certainly run out.
const WINDOW: Duration = Duration::from_millis(200);
const SILENT_WAIT: Duration = Duration::from_millis(500);

const QTYPE_A: u16 = 1;
const QTYPE_AAAA: u16 = 28;
const RCODE_NXDOMAIN: u16 = 3;

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Udp4,
    Udp6,
    Tcp4,
}

/// One query of the script and how the responder treats it (keyed by DNS id, so the responder
/// needs no parser of its own). Ids are above 0x1000 so no message's first two bytes can pass
/// for a TCP length prefix that fits the read.
struct Exchange {
    id: u16,
    name: &'static str,
    qtype: u16,
    transport: Transport,
    /// None: never answered. Some((rcode, rdata of each answer)).
    reply: Option<(u16, &'static [&'static [u8]])>,
}

const SCRIPT: &[Exchange] = &[
    Exchange { id: 0x1001, name: "a.tapio.test", qtype: QTYPE_A, transport: Transport::Udp4, reply: Some((0, &[&[192, 0, 2, 1], &[192, 0, 2, 2]])) },
    Exchange {
        id: 0x1002,
        name: "aaaa.tapio.test",
        qtype: QTYPE_AAAA,
        transport: Transport::Udp4,
        reply: Some((0, &[&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]])),
    },
    Exchange { id: 0x1003, name: "nx.tapio.test", qtype: QTYPE_A, transport: Transport::Udp4, reply: Some((RCODE_NXDOMAIN, &[])) },
    Exchange { id: 0x1004, name: "silent.tapio.test", qtype: QTYPE_A, transport: Transport::Udp4, reply: None },
    Exchange {
        id: 0x1005,
        name: "v6.tapio.test",
        qtype: QTYPE_AAAA,
        transport: Transport::Udp6,
        reply: Some((0, &[&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6]])),
    },
    Exchange { id: 0x1006, name: "tcp.tapio.test", qtype: QTYPE_A, transport: Transport::Tcp4, reply: Some((0, &[&[192, 0, 2, 53]])) },
];

fn query(x: &Exchange) -> Vec<u8> {
    encode_query(x.id, x.name, x.qtype)
}

/// A query with id `id` for (`name`, `qtype`, class IN), recursion desired.
pub(super) fn encode_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes()); // IN
    m
}

/// The answer to `q` (the query's bytes): its id and question echoed, each answer's name a
/// compression pointer to that question (offset 12) and its type the question's.
pub(super) fn encode_response(q: &[u8], rcode: u16, answers: &[&[u8]]) -> Vec<u8> {
    let qtype = &q[q.len() - 4..q.len() - 2];
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(&q[..2]);
    m.extend_from_slice(&(0x8180u16 | rcode).to_be_bytes()); // QR, RD, RA
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&q[12..]);
    for rdata in answers {
        m.extend_from_slice(&[0xc0, 0x0c]);
        m.extend_from_slice(qtype);
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&60u32.to_be_bytes());
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(rdata);
    }
    m
}

fn exchange_of(msg: &[u8]) -> Option<&'static Exchange> {
    let id = u16::from_be_bytes([*msg.first()?, *msg.get(1)?]);
    SCRIPT.iter().find(|x| x.id == id)
}

/// The responder's sockets, bound on its own thread (the packet path names a socket's creating
/// thread), which reports the bind's result before the client starts.
struct Responder {
    udp4: UdpSocket,
    udp6: UdpSocket,
    tcp4: TcpListener,
}

impl Responder {
    fn bind() -> io::Result<Self> {
        Ok(Self {
            udp4: UdpSocket::bind((Ipv4Addr::LOCALHOST, PORT))?,
            udp6: UdpSocket::bind((Ipv6Addr::LOCALHOST, PORT))?,
            tcp4: TcpListener::bind((Ipv4Addr::LOCALHOST, PORT))?,
        })
    }

    /// Serves exactly the script's messages (UDP datagrams, TCP connections), waiting on the
    /// sockets with a bounded poll. Returns the thread's id for the snapshot's roles.
    fn serve(self) -> io::Result<u32> {
        let tid = super::gettid();
        let udp_total = SCRIPT.iter().filter(|x| x.transport != Transport::Tcp4).count();
        let tcp_total = SCRIPT.len() - udp_total;
        let (mut udp_seen, mut tcp_seen) = (0, 0);
        let deadline = Instant::now() + IO_TIMEOUT;
        while udp_seen < udp_total || tcp_seen < tcp_total {
            let mut fds = [self.udp4.as_raw_fd(), self.udp6.as_raw_fd(), self.tcp4.as_raw_fd()]
                .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
            let left = deadline.saturating_duration_since(Instant::now()).as_millis() as libc::c_int;
            // SAFETY: fds is a valid array of three pollfd entries.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, left) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                return Err(io::Error::other(format!("responder: {udp_seen}/{udp_total} datagrams, {tcp_seen}/{tcp_total} connections before the deadline")));
            }
            for (i, udp) in [&self.udp4, &self.udp6].into_iter().enumerate() {
                if fds[i].revents & libc::POLLIN != 0 {
                    let mut buf = [0u8; 512];
                    let (n, peer) = udp.recv_from(&mut buf)?;
                    udp_seen += 1;
                    if let Some((rcode, answers)) = exchange_of(&buf[..n]).and_then(|x| x.reply) {
                        udp.send_to(&encode_response(&buf[..n], rcode, answers), peer)?;
                    }
                }
            }
            if fds[2].revents & libc::POLLIN != 0 {
                let (mut conn, _) = self.tcp4.accept()?;
                conn.set_read_timeout(Some(IO_TIMEOUT))?;
                tcp_seen += 1;
                // The prefix and the message are read apart, as glibc's resolver reads them.
                let mut prefix = [0u8; 2];
                conn.read_exact(&mut prefix)?;
                let mut msg = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
                conn.read_exact(&mut msg)?;
                if let Some((rcode, answers)) = exchange_of(&msg).and_then(|x| x.reply) {
                    let r = encode_response(&msg, rcode, answers);
                    let mut framed = (r.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&r);
                    conn.write_all(&framed)?;
                }
            }
        }
        Ok(tid)
    }
}

/// What the client saw: its ports, and per query the reply's bytes (None: no reply).
struct ClientRun {
    ports: Vec<(u16, String)>,
    replies: Vec<(u16, Option<Vec<u8>>)>,
}

/// Sends the script from the calling thread: UDP with sendto/recvfrom on unconnected sockets,
/// TCP with the 2-byte prefix in the same buffer as the message.
fn client() -> io::Result<ClientRun> {
    let udp4 = super::udp_client(Ipv4Addr::LOCALHOST.into())?;
    let udp6 = super::udp_client(Ipv6Addr::LOCALHOST.into())?;
    let mut run = ClientRun {
        ports: vec![(udp4.local_addr()?.port(), "client_udp4".to_owned()), (udp6.local_addr()?.port(), "client_udp6".to_owned())],
        replies: Vec::new(),
    };
    for x in SCRIPT {
        let q = query(x);
        let reply = match x.transport {
            Transport::Udp4 | Transport::Udp6 => {
                let (sock, server) = if x.transport == Transport::Udp4 {
                    (&udp4, SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), PORT))
                } else {
                    (&udp6, SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), PORT))
                };
                sock.set_read_timeout(Some(if x.reply.is_some() { IO_TIMEOUT } else { SILENT_WAIT }))?;
                sock.send_to(&q, server)?;
                let mut buf = [0u8; 512];
                match sock.recv_from(&mut buf) {
                    Ok((n, _)) => Some(buf[..n].to_vec()),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => None,
                    Err(e) => return Err(e),
                }
            }
            Transport::Tcp4 => {
                let mut s = TcpStream::connect_timeout(&SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), PORT), IO_TIMEOUT)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                run.ports.push((s.local_addr()?.port(), "client_tcp4".to_owned()));
                let mut framed = (q.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&q);
                s.write_all(&framed)?;
                // One read: on loopback the server's single write arrives as one segment, so the
                // buffer starts with the prefix (the probe's other TCP path).
                let mut buf = [0u8; 514];
                let mut n = s.read(&mut buf)?;
                while n >= 2 && n < 2 + usize::from(u16::from_be_bytes([buf[0], buf[1]])) {
                    match s.read(&mut buf[n..])? {
                        0 => break,
                        more => n += more,
                    }
                }
                (n >= 2).then(|| buf[2..n].to_vec())
            }
        };
        run.replies.push((x.id, reply));
    }
    Ok(run)
}

pub fn run(out: &mut Outcome, loaded: &mut [LoadedMonitor]) {
    let Some(m) = monitor(out, loaded, "dns", "dns.udp_tcp") else { return };
    discard(m);
    let lost_before = lost(m);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let server = std::thread::Builder::new().name("tapio-dns-srv".to_owned()).spawn(move || match Responder::bind() {
        Ok(responder) => {
            let _ = ready_tx.send(Ok(()));
            responder.serve()
        }
        Err(e) => {
            let _ = ready_tx.send(Err(format!("bind port {PORT}: {e}")));
            Err(e)
        }
    });
    let server = match server {
        Ok(h) => h,
        Err(e) => return check(out, "dns.udp_tcp.responder", false, format!("spawn: {e}")),
    };
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = server.join();
            return check(out, "dns.udp_tcp.responder", false, e);
        }
        Err(_) => return check(out, "dns.udp_tcp.responder", false, "responder ended before binding".to_owned()),
    }
    let client = client();
    let server = server.join().map_err(|_| io::Error::other("responder panicked")).and_then(|r| r);
    let (run, server_tid) = match (client, server) {
        (Ok(c), Ok(tid)) => (c, tid),
        (c, s) => {
            let detail = format!("client: {:?}; responder: {:?}", c.err(), s.err());
            return check(out, "dns.udp_tcp.traffic", false, detail);
        }
    };
    for (id, reply) in &run.replies {
        let x = SCRIPT.iter().find(|x| x.id == *id).expect("script id");
        let pass = match (x.reply, reply) {
            (None, None) => true,
            (Some((rcode, answers)), Some(r)) => *r == encode_response(&query(x), rcode, answers),
            _ => false,
        };
        check(out, &format!("dns.udp_tcp.reply_{}", x.name.split('.').next().unwrap_or("")), pass, format!("id {id:#x}: reply {reply:?}"));
    }

    // Every event is emitted in the syscall that sent or received the message, so all of them
    // are in the ring once both threads are done: no waiting is needed.
    let me = std::process::id();
    let c = collect(m, |e| e.tgid == me, |_| true, EVENT_WAIT);
    let dropped = lost(m) - lost_before;
    check(out, "dns.udp_tcp.decode", c.errors.is_empty() && dropped == 0, format!("{} events, {dropped} lost, errors: {:?}", c.events.len(), c.errors));

    // The loader's correlator, fed in kernel order; the unanswered query's window has run out
    // (the client waited longer than the window for it), so expiring now reports it.
    let mut events: Vec<Event> = c.events;
    events.sort_by_key(|e| e.ts_ns);
    let mut correlator = Correlator::new(WINDOW, 64);
    for e in &mut events {
        correlator.observe(e);
    }
    events.extend(correlator.expire(monotonic_ns()));
    let values: Vec<Value> = events.iter().map(|e| serde_json::to_value(e).expect("events serialize")).collect();
    key_checks(out, &values, &events, gettid(), server_tid);

    let mut ports = run.ports;
    ports.sort();
    let roles = Roles {
        pids: vec![(u64::from(me), "agent".to_owned()), (u64::from(server_tid), "dns_server".to_owned())],
        exe: current_exe(),
        ports,
        cgroups: crate::own_cgroups(),
    };
    snapshot(out, "dns", SCENARIO, &values, &roles);
}

/// Explicit assertions of the fields the spec's dns defects broke, per exchange.
fn key_checks(out: &mut Outcome, values: &[Value], events: &[Event], client_tid: u32, server_tid: u32) {
    for x in SCRIPT {
        let of = |event: &str, tid: u32| values.iter().filter(|v| v["dns_id"] == x.id && v["event"] == event && v["pid"] == tid).collect::<Vec<_>>();
        let transport = if x.transport == Transport::Tcp4 { "tcp" } else { "udp" };
        let (version, server_addr) = if x.transport == Transport::Udp6 { (6, "::1") } else { (4, "127.0.0.1") };
        let qtype = if x.qtype == QTYPE_A { "A" } else { "AAAA" };
        let question = |v: &Value| {
            v["qname"] == x.name && v["qtype"] == qtype && v["transport"] == transport && v["ip_version"] == version && v["truncated"] == false
        };
        let mut problems = Vec::new();
        // The query, once as sent by the client and once as received by the responder.
        for (side, tid) in [("client", client_tid), ("server", server_tid)] {
            let q = of("query", tid);
            if !(q.len() == 1 && question(q[0]) && q[0]["daddr"] == server_addr && q[0]["dport"] == PORT) {
                problems.push(format!("{side} query: {q:?}"));
            }
        }
        match x.reply {
            Some((rcode, answers)) => {
                let rcode = if rcode == RCODE_NXDOMAIN { "NXDOMAIN" } else { "NOERROR" };
                for (side, tid) in [("client", client_tid), ("server", server_tid)] {
                    let r = of("response", tid);
                    // Matched (a positive latency), same id, the server as sender (source port 53).
                    let ok = r.len() == 1
                        && question(r[0])
                        && r[0]["rcode"] == rcode
                        && r[0]["answers"] == answers.len()
                        && r[0]["saddr"] == server_addr
                        && r[0]["sport"] == PORT
                        && r[0]["latency_ns"].as_u64().is_some_and(|l| l > 0);
                    if !ok {
                        problems.push(format!("{side} response: {r:?}"));
                    }
                }
            }
            None => {
                let t: Vec<_> = values.iter().filter(|v| v["dns_id"] == x.id && v["event"] == "timeout").collect();
                let r: Vec<_> = values.iter().filter(|v| v["dns_id"] == x.id && v["event"] == "response").collect();
                if !(t.len() == 2 && t.iter().all(|v| question(v)) && r.is_empty()) {
                    problems.push(format!("expected a timeout on each side and no response: timeouts {t:?}, responses {r:?}"));
                }
            }
        }
        check(out, &format!("dns.udp_tcp.{}", x.name.split('.').next().unwrap_or("")), problems.is_empty(), problems.join("; "));
    }
    let unmatched = events
        .iter()
        .filter(|e| matches!(&e.body, Body::Dns(b) if e.event == "response" && !matches!(b.latency_ns, Some(Some(_)))))
        .count();
    check(out, "dns.udp_tcp.correlation", unmatched == 0, format!("{unmatched} responses matched no query"));
}
