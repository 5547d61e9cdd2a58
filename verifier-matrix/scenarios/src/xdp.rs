//! xdp/veth_prefixes: the XDP filter (loader/crates/runtime/src/monitors/xdp_filter.rs) on the namespace's end
//! of a veth pair, with one IPv4 and one IPv6 prefix blocked, and UDP datagrams sent to it from
//! the agent's namespace, from an allowed and from a blocked source address of each family.
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
use tapio_runtime::monitors::xdp_filter::{AttachMode, Counters, FilterOptions, Prefix, StatsRecord, XdpFilter};
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
/// The blocklist: the blocked sources' subnets, not the receivers'.
const BLOCKS: [&str; 2] = ["198.19.71.0/24", "2001:2:0:72::/64"];

/// One step: datagrams from `src` to the family's receiver, and whether they may arrive.
struct Step {
    name: &'static str,
    src: IpAddr,
    allowed: bool,
}

const STEPS: [Step; 4] = [
    Step { name: "v4_allowed", src: IpAddr::V4(ALLOWED_V4), allowed: true },
    Step { name: "v4_blocked", src: IpAddr::V4(BLOCKED_V4), allowed: false },
    Step { name: "v6_allowed", src: IpAddr::V6(ALLOWED_V6), allowed: true },
    Step { name: "v6_blocked", src: IpAddr::V6(BLOCKED_V6), allowed: false },
];

/// The family's receiver address and the allowed source its fence comes from.
fn family_of(src: IpAddr) -> (IpAddr, IpAddr) {
    match src {
        IpAddr::V4(_) => (IpAddr::V4(RECEIVER_V4), IpAddr::V4(ALLOWED_V4)),
        IpAddr::V6(_) => (IpAddr::V6(RECEIVER_V6), IpAddr::V6(ALLOWED_V6)),
    }
}

/// Sends one step's datagrams and its fence, and returns the sources of what arrived before the
/// fence.
fn step(s: &Step, receiver: &UdpSocket) -> Result<Vec<IpAddr>, String> {
    let (dst, fence_src) = family_of(s.src);
    let to = SocketAddr::new(dst, PORT);
    let send = |src: IpAddr, payload: &str| -> Result<(), String> {
        let sock = UdpSocket::bind(SocketAddr::new(src, 0)).map_err(|e| format!("bind {src}: {e}"))?;
        sock.send_to(payload.as_bytes(), to).map(drop).map_err(|e| format!("send {src} -> {to}: {e}"))
    };
    for round in 0..ROUNDS {
        send(s.src, &format!("{}#{round}", s.name))?;
    }
    let fence = format!("fence:{}", s.name);
    send(fence_src, &fence)?;
    let mut arrived = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let (n, from) = receiver.recv_from(&mut buf).map_err(|e| format!("{}: wait for the fence from {fence_src}: {e}", s.name))?;
        if &buf[..n] == fence.as_bytes() {
            return Ok(arrived);
        }
        if buf[..n].starts_with(s.name.as_bytes()) {
            arrived.push(from.ip());
        }
    }
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
    let ns_addrs = [(IpAddr::V4(RECEIVER_V4), 24), (IpAddr::V6(RECEIVER_V6), 64)];
    let Some(pair) = veth::pair_or_report(out, &name, "x", &root_addrs, &ns_addrs) else { return };
    let blocks: Vec<Prefix> = BLOCKS.iter().map(|p| p.parse().expect("the scenario's prefixes parse")).collect();
    let options = FilterOptions { blocks, ..Default::default() };
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
        Ok((filter, mode, bind(IpAddr::V4(RECEIVER_V4))?, bind(IpAddr::V6(RECEIVER_V6))?))
    });
    let (filter, mode, rx4, rx6) = match set_up.map_err(|e| e.to_string()).and_then(|r| r) {
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
        let receiver = if s.src.is_ipv4() { &rx4 } else { &rx6 };
        let arrived = match step(s, receiver) {
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
        let (want_pass, want_drop) = if s.allowed { (ROUNDS + 1, 0) } else { (1, ROUNDS) };
        let (pass, drop) = (now.pass - before.pass, now.drop - before.drop);
        let want_arrived = if s.allowed { ROUNDS as usize } else { 0 };
        let ok = arrived.len() == want_arrived
            && arrived.iter().all(|a| *a == s.src)
            && (pass, drop) == (want_pass, want_drop)
            && now.total() - before.total() == want_pass + want_drop;
        let prefix = if s.allowed { "no blocked prefix".to_owned() } else { format!("blocked by {}", BLOCKS[usize::from(s.src.is_ipv6())]) };
        check(
            out,
            &format!("{name}.{}", s.name),
            ok,
            format!(
                "from {} ({prefix}): {} of {ROUNDS} arrived {arrived:?}; counted pass +{pass} drop +{drop} (want +{want_pass} +{want_drop}); counters {now:?}",
                s.src,
                arrived.len()
            ),
        );
        let mut record = serde_json::to_value(StatsRecord::now(veth::NS_IF, mode, now)).expect("stats records serialize");
        record["step"] = Value::from(s.name);
        records.push(record);
        before = now;
    }
    let want = Counters { pass: 2 * ROUNDS + 4, drop: 2 * ROUNDS, ..Default::default() };
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
    drop((rx4, rx6, pair));
}
