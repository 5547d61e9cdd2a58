//! DNS correlation on the perf transport when the query and the response are recorded on
//! different CPUs (issue 15, item 2).
//!
//! A perf event array has one buffer per CPU and a drain pass reads them in CPU order. The
//! client sends each query from a thread pinned to CPU 1 (its egress record is written there);
//! the responder answers from a thread pinned to CPU 0, and on loopback the reply is received in
//! the softirq the responder's send raises on CPU 0. So both ends' responses sit in CPU 0's
//! buffer and their queries in CPU 1's, and a drain pass meets each response before its query.
//! Every response must still carry its latency, and no answered query may time out.

mod common;

use std::{
    net::UdpSocket,
    sync::{Arc, Barrier},
    thread,
    time::Duration,
};

use common::{kernel_lock, skip_unless_root, Loader};
use serde_json::Value;

/// Exchanges: enough that, unordered, some response is drained before its query.
const EXCHANGES: u16 = 40;
const SERVER: &str = "127.0.0.3:53";
const FIRST_ID: u16 = 0x5100;

/// Pins the calling thread to `cpu` and checks that it runs there.
fn pin(cpu: usize) {
    // SAFETY: set is a plain bit set, fully initialised by CPU_ZERO before use.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0, "pin to CPU {cpu}");
        assert_eq!(libc::sched_getcpu(), cpu as i32, "running on CPU {cpu} after pinning");
    }
}

fn query(id: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["perf", "tapio", "test"] {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).unwrap_or(1)
}

#[test]
fn perf_transport_matches_a_response_drained_before_its_query() {
    if skip_unless_root("perf_transport_matches_a_response_drained_before_its_query") {
        return;
    }
    // The test needs two CPUs, which every machine this project runs its tests on has; a
    // single-CPU machine cannot record a query and its response on different CPUs.
    assert!(online_cpus() >= 2, "needs two online CPUs (query on CPU 1, response on CPU 0)");
    let _serial = kernel_lock();
    let loader = Loader::start(&["--monitors", "dns", "--transport", "perf", "--dns-timeout-ms", "400"]);
    assert!(loader.stderr.lock().unwrap().contains("perf"), "the run must use the perf transport");

    let ready = Arc::new(Barrier::new(2));
    let server_ready = Arc::clone(&ready);
    let server = thread::spawn(move || {
        pin(0);
        // The socket is created on this thread: the packet path names its creator.
        let sock = UdpSocket::bind(SERVER).expect("bind 127.0.0.3:53");
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        server_ready.wait();
        let mut buf = [0u8; 512];
        for _ in 0..EXCHANGES {
            let (n, from) = sock.recv_from(&mut buf).expect("responder: a query");
            let mut reply = buf[..n].to_vec();
            reply[2] |= 0x80; // QR: a response
            reply[3] = 0x80; // RA, NOERROR
            sock.send_to(&reply, from).expect("responder: send");
        }
        gettid()
    });
    let client = thread::spawn(move || {
        pin(1);
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the client");
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        ready.wait();
        let mut buf = [0u8; 512];
        for i in 0..EXCHANGES {
            let id = FIRST_ID + i;
            sock.send_to(&query(id), SERVER).expect("client: send");
            let n = sock.recv(&mut buf).expect("client: the response");
            assert_eq!(&buf[..2], &id.to_be_bytes(), "response to query {id:#x} ({n} bytes)");
            thread::sleep(Duration::from_millis(2));
        }
        gettid()
    });
    let server_tid = server.join().expect("responder thread");
    let client_tid = client.join().expect("client thread");
    // Past the 400 ms window: an answered query that was left pending would time out by now.
    thread::sleep(Duration::from_millis(1000));
    let (events, stderr, status) = loader.finish();
    assert!(status.success(), "tapio-load exits 0 on SIGTERM: {status}; stderr:\n{stderr}");

    let mut problems = Vec::new();
    for (end, tid) in [("client", client_tid), ("responder", server_tid)] {
        // This end's events of the exchanges, in output order.
        let ours: Vec<&Value> = events
            .iter()
            .filter(|e| e["monitor"] == "dns" && e["pid"] == tid)
            .filter(|e| e["dns_id"].as_u64().is_some_and(|id| (u64::from(FIRST_ID)..u64::from(FIRST_ID + EXCHANGES)).contains(&id)))
            .collect();
        for i in 0..EXCHANGES {
            let id = u64::from(FIRST_ID + i);
            let of = |kind: &str| ours.iter().enumerate().filter(|(_, e)| e["dns_id"] == id && e["event"] == kind).collect::<Vec<_>>();
            let (queries, responses, timeouts) = (of("query"), of("response"), of("timeout"));
            if queries.len() != 1 || responses.len() != 1 {
                problems.push(format!("{end} {id:#x}: {} queries, {} responses", queries.len(), responses.len()));
                continue;
            }
            let ((qi, q), (ri, r)) = (queries[0], responses[0]);
            let want = r["ts_ns"].as_u64().unwrap() - q["ts_ns"].as_u64().unwrap();
            if r["latency_ns"].as_u64() != Some(want) {
                problems.push(format!("{end} {id:#x}: response latency_ns {} (want {want})", r["latency_ns"]));
            }
            // On perf the message bytes come from the packet after the record (DNS_F_SKB_TAIL).
            for e in [q, r] {
                if e["qname"] != "perf.tapio.test" || e["truncated"] != false {
                    problems.push(format!("{end} {id:#x}: {} without its question: {e}", e["event"]));
                }
            }
            if qi > ri {
                problems.push(format!("{end} {id:#x}: the response came out before its query"));
            }
            if !timeouts.is_empty() {
                problems.push(format!("{end} {id:#x}: an answered query reported as a timeout"));
            }
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}\nstderr:\n{stderr}", problems.len(), problems.join("\n"));
}

fn gettid() -> u64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}
