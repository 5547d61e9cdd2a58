//! xdp/veth_prefixes: the XDP filter (loader/crates/runtime/src/monitors/xdp_filter.rs) on the namespace's end
//! of a veth pair, with one IPv4 and one IPv6 prefix blocked as sources and one address of each
//! family blocked as a destination (`MatchMode::Both`: either address), and UDP datagrams sent to
//! it from the agent's namespace: from an allowed and from a blocked source address of each
//! family, and from the allowed source to the blocked destination. Then a second filter on the
//! namespace's loopback, which has no native XDP, must be attached in generic mode.
//!
//! The filter emits no per-packet events, only its per-verdict counters (the output contract's
//! periodic `stats` records), so the snapshot is the `stats` record read after each step. The
//! counts are exact because the pair carries nothing but the scenario's own datagrams (veth.rs
//! explains how), and because each step ends with a fence: one datagram from the family's allowed
//! source, sent after the step's own. Each datagram goes out from a socket of its own, but the
//! pair has one transmit and one receive queue per end (netlink.rs, `Netlink::create_veth`), so
//! the end with XDP takes every frame from one ring, in the order they were sent, and runs the
//! program on them in that order: once the fence reached its socket the program has judged
//! everything sent before it, the blocked datagrams too, and the counters can be read.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use serde_json::Value;
use tapio_runtime::monitors::xdp_filter::{AttachMode, Counters, FilterOptions, MatchMode, Prefix, StatsRecord, XdpFilter};
use tapio_testkit::snapshot::Roles;

use super::{check, current_exe, snapshot, veth};
use crate::Outcome;

const SCENARIO: &str = "veth_prefixes";
/// The receivers' port in the namespace.
const PORT: u16 = 47_071;
/// Datagrams per step.
const ROUNDS: u64 = 3;
/// No datagram the scenario waits for takes longer than this (a guard against a hang).
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// RFC 2544 / RFC 5180 benchmarking addresses, as in tcp_veth.rs, on a subnet of their own.
const ALLOWED_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 71, 1);
const BLOCKED_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 71, 1);
const RECEIVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 71, 2);
const ALLOWED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x71, 0, 0, 0, 1);
const BLOCKED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x72, 0, 0, 0, 1);
const RECEIVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x71, 0, 0, 0, 2);
/// A second receiver per family, on the allowed subnet but blocked as a host rule.
const BLOCKED_DST_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 71, 3);
const BLOCKED_DST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x71, 0, 0, 0, 3);
/// The blocklist: the blocked sources' subnets, and the blocked destinations alone.
const BLOCKS: [&str; 4] = ["198.19.71.0/24", "2001:2:0:72::/64", "198.18.71.3/32", "2001:2:0:71::3/128"];

/// One step: datagrams from `src` to `dst` (a receiver in the namespace), and whether they may
/// arrive, with the blocklist entry that stops them.
struct Step {
    name: &'static str,
    src: IpAddr,
    dst: IpAddr,
    blocked_by: Option<&'static str>,
}

const STEPS: [Step; 6] = [
    Step { name: "v4_allowed", src: IpAddr::V4(ALLOWED_V4), dst: IpAddr::V4(RECEIVER_V4), blocked_by: None },
    Step { name: "v4_blocked", src: IpAddr::V4(BLOCKED_V4), dst: IpAddr::V4(RECEIVER_V4), blocked_by: Some(BLOCKS[0]) },
    Step { name: "v6_allowed", src: IpAddr::V6(ALLOWED_V6), dst: IpAddr::V6(RECEIVER_V6), blocked_by: None },
    Step { name: "v6_blocked", src: IpAddr::V6(BLOCKED_V6), dst: IpAddr::V6(RECEIVER_V6), blocked_by: Some(BLOCKS[1]) },
    Step { name: "v4_blocked_dst", src: IpAddr::V4(ALLOWED_V4), dst: IpAddr::V4(BLOCKED_DST_V4), blocked_by: Some(BLOCKS[2]) },
    Step { name: "v6_blocked_dst", src: IpAddr::V6(ALLOWED_V6), dst: IpAddr::V6(BLOCKED_DST_V6), blocked_by: Some(BLOCKS[3]) },
];

/// The family's fence: from its allowed source to its first receiver.
fn fence_of(src: IpAddr) -> (IpAddr, IpAddr) {
    match src {
        IpAddr::V4(_) => (IpAddr::V4(RECEIVER_V4), IpAddr::V4(ALLOWED_V4)),
        IpAddr::V6(_) => (IpAddr::V6(RECEIVER_V6), IpAddr::V6(ALLOWED_V6)),
    }
}

/// The namespace's sockets, one per receiver address.
struct Receivers {
    v4: UdpSocket,
    v6: UdpSocket,
    v4_blocked: UdpSocket,
    v6_blocked: UdpSocket,
}

impl Receivers {
    fn at(&self, dst: IpAddr) -> &UdpSocket {
        match dst {
            IpAddr::V4(a) if a == BLOCKED_DST_V4 => &self.v4_blocked,
            IpAddr::V6(a) if a == BLOCKED_DST_V6 => &self.v6_blocked,
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => &self.v6,
        }
    }
}

/// Sends one step's datagrams and its fence, and returns the sources of what arrived before the
/// fence. A passed frame is delivered to its socket before the next frame of the ring is judged,
/// so once the fence is in, whatever of the step's arrived at another receiver is queued there.
fn step(s: &Step, rx: &Receivers) -> Result<Vec<IpAddr>, String> {
    let (fence_dst, fence_src) = fence_of(s.src);
    let receiver = rx.at(fence_dst);
    let to = SocketAddr::new(s.dst, PORT);
    let fence_to = SocketAddr::new(fence_dst, PORT);
    let send = |src: IpAddr, to: SocketAddr, payload: &str| -> Result<(), String> {
        let sock = UdpSocket::bind(SocketAddr::new(src, 0)).map_err(|e| format!("bind {src}: {e}"))?;
        sock.send_to(payload.as_bytes(), to).map(drop).map_err(|e| format!("send {src} -> {to}: {e}"))
    };
    for round in 0..ROUNDS {
        send(s.src, to, &format!("{}#{round}", s.name))?;
    }
    let fence = format!("fence:{}", s.name);
    send(fence_src, fence_to, &fence)?;
    let mut arrived = Vec::new();
    let mut buf = [0u8; 64];
    let ours = |payload: &[u8]| payload.starts_with(format!("{}#", s.name).as_bytes());
    loop {
        let (n, from) = receiver.recv_from(&mut buf).map_err(|e| format!("{}: wait for the fence from {fence_src}: {e}", s.name))?;
        if &buf[..n] == fence.as_bytes() {
            break;
        }
        if ours(&buf[..n]) {
            arrived.push(from.ip());
        }
    }
    let other = rx.at(s.dst);
    if !std::ptr::eq(other, receiver) {
        other.set_nonblocking(true).map_err(|e| e.to_string())?;
        while let Ok((n, from)) = other.recv_from(&mut buf) {
            if ours(&buf[..n]) {
                arrived.push(from.ip());
            }
        }
        other.set_nonblocking(false).map_err(|e| e.to_string())?;
    }
    Ok(arrived)
}

/// Runs the steps against the filter on the pair's namespace end; checks and snapshots the counts.
pub fn run(out: &mut Outcome) {
    let name = format!("xdp.{SCENARIO}");
    let root_addrs = [
        (IpAddr::V4(ALLOWED_V4), 24),
        (IpAddr::V4(BLOCKED_V4), 24),
        (IpAddr::V6(ALLOWED_V6), 64),
        (IpAddr::V6(BLOCKED_V6), 64),
    ];
    let ns_addrs =
        [(IpAddr::V4(RECEIVER_V4), 24), (IpAddr::V6(RECEIVER_V6), 64), (IpAddr::V4(BLOCKED_DST_V4), 24), (IpAddr::V6(BLOCKED_DST_V6), 64)];
    let Some(pair) = veth::pair_or_report(out, &name, "x", &root_addrs, &ns_addrs) else { return };
    let blocks: Vec<Prefix> = BLOCKS.iter().map(|p| p.parse().expect("the scenario's prefixes parse")).collect();
    let options = FilterOptions { blocks, match_mode: MatchMode::Both, steer_cpus: None };
    // The attach names the interface, which only a thread inside the namespace can see; the
    // receivers are made there too. Both work from any thread afterwards.
    let set_up = pair.ns.run(|| -> Result<_, String> {
        let mut filter = XdpFilter::load(None, &options).map_err(|e| e.to_string())?;
        let mode = filter.attach(veth::NS_IF).map_err(|e| e.to_string())?;
        let bind = |ip: IpAddr| -> Result<UdpSocket, String> {
            let s = UdpSocket::bind(SocketAddr::new(ip, PORT)).map_err(|e| format!("bind {ip}:{PORT} in the namespace: {e}"))?;
            s.set_read_timeout(Some(RECV_TIMEOUT)).map_err(|e| e.to_string())?;
            Ok(s)
        };
        let rx = Receivers {
            v4: bind(IpAddr::V4(RECEIVER_V4))?,
            v6: bind(IpAddr::V6(RECEIVER_V6))?,
            v4_blocked: bind(IpAddr::V4(BLOCKED_DST_V4))?,
            v6_blocked: bind(IpAddr::V6(BLOCKED_DST_V6))?,
        };
        Ok((filter, mode, rx))
    });
    let (filter, mode, rx) = match set_up.map_err(|e| e.to_string()).and_then(|r| r) {
        Ok(x) => x,
        Err(e) => {
            check(out, &format!("{name}.attach"), false, e);
            return;
        }
    };
    // veth has had native XDP since 4.19 (drivers/net/veth.c, ndo_bpf), older than any row.
    check(out, &format!("{name}.attach"), mode == AttachMode::Native, format!("attached to {} in {mode} mode", veth::NS_IF));
    let mut records: Vec<Value> = Vec::new();
    let mut before = Counters::default();
    for s in &STEPS {
        let allowed = s.blocked_by.is_none();
        let arrived = match step(s, &rx) {
            Ok(a) => a,
            Err(e) => {
                check(out, &format!("{name}.{}", s.name), false, e);
                continue;
            }
        };
        let now = match filter.counters() {
            Ok(c) => c,
            Err(e) => {
                check(out, &format!("{name}.{}", s.name), false, e.to_string());
                continue;
            }
        };
        // The step's datagrams under their verdict, and the fence under pass.
        let (want_pass, want_drop) = if allowed { (ROUNDS + 1, 0) } else { (1, ROUNDS) };
        let (pass, drop) = (now.pass - before.pass, now.drop - before.drop);
        let want_arrived = if allowed { ROUNDS as usize } else { 0 };
        let ok = arrived.len() == want_arrived
            && arrived.iter().all(|a| *a == s.src)
            && (pass, drop) == (want_pass, want_drop)
            && now.total() - before.total() == want_pass + want_drop;
        let prefix = s.blocked_by.map_or_else(|| "no blocked prefix".to_owned(), |b| format!("blocked by {b}"));
        check(
            out,
            &format!("{name}.{}", s.name),
            ok,
            format!(
                "from {} to {} ({prefix}): {} of {ROUNDS} arrived {arrived:?}; counted pass +{pass} drop +{drop} (want +{want_pass} +{want_drop}); counters {now:?}",
                s.src,
                s.dst,
                arrived.len()
            ),
        );
        let mut record = serde_json::to_value(StatsRecord::now(veth::NS_IF, mode, now)).expect("stats records serialize");
        record["step"] = Value::from(s.name);
        records.push(record);
        before = now;
    }
    let want = Counters { pass: 2 * ROUNDS + 6, drop: 4 * ROUNDS, ..Default::default() };
    check(out, &format!("{name}.counters"), before == want, format!("{before:?} after every step (want {want:?}: nothing but the scenario's datagrams)"));
    let roles = Roles { pids: vec![(u64::from(std::process::id()), "agent".to_owned())], exe: current_exe(), ports: Vec::new(), cgroups: crate::own_cgroups() };
    snapshot(out, "xdp", SCENARIO, &records, &roles);
    // Detached where it was attached: before 5.9 the link is the interface's netlink slot,
    // addressed by an index only that namespace resolves.
    let detached = pair.ns.run(move || {
        let mut filter = filter;
        filter.detach().map_err(|e| e.to_string())
    });
    if let Err(e) = detached.map_err(|e| e.to_string()).and_then(|r| r) {
        check(out, &format!("{name}.detach"), false, e);
    }
    drop(rx);
    generic_on_loopback(out, &name, &pair);
    drop(pair);
}

/// A filter on the namespace's loopback, which has no native XDP (no `ndo_bpf`): the loader falls
/// back to generic (skb) mode, says so, and detaches from it.
///
/// From 5.9 to 5.14 the kernel refuses in generic mode a program whose CPU map entries may carry
/// a program (the 8-byte value aya gives every CPU map there); the loader makes the filter's CPU
/// map itself with the 4-byte value (tapio_runtime::monitors::xdp_cpumap), so this passes on
/// every kernel.
fn generic_on_loopback(out: &mut Outcome, name: &str, pair: &veth::VethPair) {
    let result = pair.ns.run(|| -> Result<String, String> {
        let mut nl = crate::netlink::Netlink::open().map_err(|e| e.to_string())?;
        let lo = nl.link_index("lo").map_err(|e| e.to_string())?;
        let up = libc::IFF_UP as u32;
        nl.set_flags(lo, up, up).map_err(|e| e.to_string())?;
        let mut filter = XdpFilter::load(None, &FilterOptions::default()).map_err(|e| e.to_string())?;
        let mode = filter.attach("lo").map_err(|e| format!("attach to lo: {e}"))?;
        let attached = filter.attached().map(|(i, m)| (i.to_owned(), m));
        filter.detach().map_err(|e| e.to_string())?;
        let after = filter.attached().map(|(i, m)| (i.to_owned(), m));
        if mode == AttachMode::Generic && attached == Some(("lo".to_owned(), AttachMode::Generic)) && after.is_none() {
            Ok(format!("attached to lo in {mode} mode, then detached"))
        } else {
            Err(format!("attach mode {mode}, attached {attached:?}, after detach {after:?} (want generic on lo, then none)"))
        }
    });
    let check_name = format!("{name}.generic_lo");
    match result.map_err(|e| e.to_string()).and_then(|r| r) {
        Ok(detail) => check(out, &check_name, true, detail),
        Err(e) => check(out, &check_name, false, e),
    }
}
