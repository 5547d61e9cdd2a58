//! The dns and network monitors' packet path (issue 13): TCP DNS framed by the stream position,
//! never guessed from the bytes, and no program of theirs runs on the node's unrelated syscalls.
//! Real kernel, real sockets on loopback; needs root.

mod common;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use common::{kernel_lock, skip_unless_root, Loader};
use serde_json::Value;

/// A query for `name` with id `id`, type A (the tests' shared builder).
fn query(id: u16, name: &str) -> Vec<u8> {
    common::dns_wire::query(id, name, 1)
}

/// A NOERROR response to `q` with no answers.
fn response(q: &[u8]) -> Vec<u8> {
    let mut m = q.to_vec();
    m[2] = 0x81;
    m[3] = 0x80;
    m
}

/// Writes the 2-byte length prefix and the message as two segments (TCP_NODELAY), as glibc's
/// resolver and libuv clients do: the message then starts a segment of its own, where a
/// byte-guessing parser takes its id for a length prefix.
fn send_framed(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(&(msg.len() as u16).to_be_bytes()).unwrap();
    stream.flush().unwrap();
    stream.write_all(msg).unwrap();
}

fn read_framed(stream: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut msg).unwrap();
    msg
}

/// A DNS id between 12 and the message's length, with the prefix in its own segment: each message
/// of both ends is reported once, with its real id and name, nothing else on that connection.
#[test]
fn tcp_dns_with_an_id_that_looks_like_a_length_is_framed_right() {
    if skip_unless_root("tcp_dns_with_an_id_that_looks_like_a_length_is_framed_right") {
        return;
    }
    let _serial = kernel_lock();
    let listener = TcpListener::bind("127.0.0.6:0").expect("bind 127.0.0.6");
    let port = listener.local_addr().unwrap().port();
    let loader = Loader::start(&["--monitors", "dns", "--dns-ports", &port.to_string()]);
    let q = query(0, "framing.tapio.test");
    // An id whose value, read as a length prefix, is at least 12 and fits the message.
    let id = 20u16;
    assert!(usize::from(id) >= 12 && usize::from(id) + 2 <= q.len(), "the id must look like a prefix");
    let q = {
        let mut q = q;
        q[..2].copy_from_slice(&id.to_be_bytes());
        q
    };
    let r = response(&q);
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_nodelay(true).unwrap();
        let got = read_framed(&mut conn);
        send_framed(&mut conn, &response(&got));
        got
    });
    let mut client = TcpStream::connect(("127.0.0.6", port)).unwrap();
    client.set_nodelay(true).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    send_framed(&mut client, &q);
    assert_eq!(read_framed(&mut client), r);
    assert_eq!(server.join().unwrap(), q);
    drop(client);

    let me = u64::from(std::process::id());
    let mut seen = Vec::new();
    let both = std::cell::Cell::new(0);
    loader.wait_for(&mut seen, Duration::from_secs(5), |e| {
        if e["event"] == "response" && e["tgid"] == me && e["dns_id"] == id {
            both.set(both.get() + 1);
        }
        both.get() == 2
    });
    let (rest, stderr, status) = loader.finish();
    seen.extend(rest);
    assert!(status.success(), "{stderr}");
    let ours: Vec<&Value> = seen.iter().filter(|e| e["monitor"] == "dns" && e["tgid"] == me && e["transport"] == "tcp").collect();
    for kind in ["query", "response"] {
        let of_kind: Vec<&&Value> = ours.iter().filter(|e| e["event"] == kind).collect();
        assert_eq!(of_kind.len(), 2, "{kind}: sent and received, once each: {ours:#?}\nstderr:\n{stderr}");
        for e in of_kind {
            assert_eq!(e["dns_id"], id, "{e}");
            assert_eq!(e["qname"], "framing.tapio.test", "{e}");
            assert_eq!(e["truncated"], false, "{e}");
        }
    }
    assert_eq!(ours.len(), 4, "nothing but the two messages, each seen by both ends: {ours:#?}");
}

/// `run_cnt` of every BPF program whose name starts with one of `prefixes`, from bpftool.
fn run_counts(prefixes: &[&str]) -> Vec<(String, u64)> {
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output().or_else(|_| Command::new("/usr/sbin/bpftool").args(["-j", "prog", "show"]).output()).expect("bpftool");
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    let mut counts: Vec<(String, u64)> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p["name"].as_str()?;
            prefixes.iter().any(|x| name.starts_with(x)).then(|| (name.to_owned(), p["run_cnt"].as_u64().unwrap_or(0)))
        })
        .collect();
    counts.sort();
    counts
}

/// Restores `kernel.bpf_stats_enabled` when dropped.
struct BpfStats(String);

impl BpfStats {
    fn enable() -> Self {
        let path = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(path).expect("read bpf_stats_enabled").trim().to_owned();
        std::fs::write(path, "1").expect("enable bpf_stats");
        Self(old)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

/// The node-tax promise: with the dns and network monitors attached, 200,000 reads and writes
/// that touch no socket run none of their programs. On the syscall fallback every one of them
/// would run the read/write tracepoint programs.
#[test]
fn unrelated_reads_and_writes_run_no_dns_or_network_program() {
    if skip_unless_root("unrelated_reads_and_writes_run_no_dns_or_network_program") {
        return;
    }
    let _serial = kernel_lock();
    let _stats = BpfStats::enable();
    let loader = Loader::start(&["--monitors", "dns,network"]);
    let before = run_counts(&["dns_", "network_"]);
    assert!(before.iter().any(|(n, _)| n == "dns_skb_egress"), "the packet path is attached: {before:?}");
    let mut zero = std::fs::File::open("/dev/zero").unwrap();
    let mut null = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
    let mut byte = [0u8; 1];
    for _ in 0..100_000 {
        zero.read_exact(&mut byte).unwrap();
        null.write_all(&byte).unwrap();
    }
    let after = run_counts(&["dns_", "network_"]);
    let (_, stderr, status) = loader.finish();
    assert!(status.success(), "{stderr}");
    assert_eq!(before.len(), after.len(), "same programs: {before:?} vs {after:?}");
    let ran: Vec<String> =
        before.iter().zip(&after).filter(|(b, a)| a.1 != b.1).map(|(b, a)| format!("{}: {} runs", b.0, a.1 - b.1)).collect();
    assert!(ran.is_empty(), "programs ran during 200,000 unrelated syscalls: {ran:?}");
}
