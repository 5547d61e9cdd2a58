//! xdp_filter on the real kernel: real UDP traffic over a veth pair between two network
//! namespaces the test makes, and `BPF_PROG_TEST_RUN` tables of frames the verdict logic must
//! get right (non-IP, truncated headers, IPv6 extension headers, VLAN tags, steering).

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use tapio_object::{inspect::object_btf, layout::check, mirror_layout};
use tapio_runtime::{
    monitors::xdp_filter::{self, test_run, udp4_frame, udp6_frame, AttachMode, Counters, FilterOptions, MatchMode, Prefix, XdpFilter, XdpFilterConfig, XdpFilterCpuSlot, XDP_DROP, XDP_PASS, XDP_REDIRECT},
};

#[path = "common/skip.rs"]
mod skip;

fn skip_unless_root(test: &str) -> bool {
    skip::unless_root(test, "CAP_BPF, CAP_NET_ADMIN to load XDP and make namespaces")
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).stderr(Stdio::piped()).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Two network namespaces joined by a veth pair; deleted (with the pair) on drop, also when the
/// test panics.
struct VethPair {
    tx_ns: String,
    rx_ns: String,
    tx_if: String,
    rx_if: String,
}

impl VethPair {
    fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let pair = Self {
            tx_ns: format!("tapio-xdp-{tag}-tx-{pid}"),
            rx_ns: format!("tapio-xdp-{tag}-rx-{pid}"),
            tx_if: format!("x{tag}t{pid}").chars().take(15).collect(),
            rx_if: format!("x{tag}r{pid}").chars().take(15).collect(),
        };
        ip(&["netns", "add", &pair.tx_ns]);
        ip(&["netns", "add", &pair.rx_ns]);
        ip(&[
            "link", "add", &pair.tx_if, "netns", &pair.tx_ns, "type", "veth", "peer", "name", &pair.rx_if, "netns",
            &pair.rx_ns,
        ]);
        pair
    }

    fn exec(&self, ns: &str, args: &[&str]) {
        let mut full = vec!["-n", ns];
        full.extend_from_slice(args);
        ip(&full);
    }

    fn mac(&self, ns: &str, iface: &str) -> String {
        let out = Command::new("ip").args(["-n", ns, "-j", "link", "show", iface]).output().expect("ip link show");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        v[0]["address"].as_str().expect("link address").to_owned()
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the peer.
        for ns in [&self.tx_ns, &self.rx_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has joined network namespace `ns` (a netns is per thread, so the
/// rest of the test process stays where it was).
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: a valid namespace fd; CLONE_NEWNET moves only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread panicked")
    })
}

const PORT: u16 = 47_000;

/// Real traffic: datagrams to and from blocked prefixes never arrive, the others do, and the
/// counters say so.
#[test]
fn veth_traffic_blocked_and_allowed() {
    if skip_unless_root("veth_traffic_blocked_and_allowed") {
        return;
    }
    let pair = VethPair::new("v");
    // Sender: an allowed and a blocked source per family. Receiver: an allowed and a blocked
    // destination per family, and the blocked sources' subnets too so replies would route.
    for (ns, iface, addrs) in [
        (&pair.tx_ns, &pair.tx_if, ["10.231.0.1/24", "10.232.0.1/24", "fd31::1/64", "fd32::1/64"]),
        (&pair.rx_ns, &pair.rx_if, ["10.231.0.2/24", "10.232.0.2/24", "fd31::2/64", "fd32::2/64"]),
    ] {
        for a in addrs {
            // nodad: an IPv6 address is usable at once instead of after duplicate detection.
            let mut args = vec!["addr", "add", a, "dev", iface.as_str()];
            if a.contains(':') {
                args.push("nodad");
            }
            pair.exec(ns, &args);
        }
        pair.exec(ns, &["link", "set", iface, "up"]);
        pair.exec(ns, &["link", "set", "lo", "up"]);
    }
    // Static neighbours: no ARP or neighbour discovery whose traffic a blocklist would also cut.
    let rx_mac = pair.mac(&pair.rx_ns, &pair.rx_if);
    for a in ["10.231.0.2", "10.232.0.2", "fd31::2", "fd32::2"] {
        pair.exec(&pair.tx_ns, &["neigh", "replace", a, "lladdr", &rx_mac, "dev", &pair.tx_if, "nud", "permanent"]);
    }

    let options = FilterOptions {
        blocks: vec!["10.232.0.0/16".parse().unwrap(), "fd32::/16".parse().unwrap()],
        match_mode: MatchMode::Both,
        steer_cpus: None,
    };
    let (filter, mode) = in_netns(&pair.rx_ns, || {
        let mut filter = XdpFilter::load(None, &options).expect("load xdp_filter");
        let mode = filter.attach(&pair.rx_if).expect("attach xdp_filter");
        (filter, mode)
    });
    // veth has native XDP (drivers/net/veth.c, ndo_bpf since 4.19).
    assert_eq!(mode, AttachMode::Native, "veth should take the program in native mode");

    // (source, destination, should arrive)
    let cases: &[(&str, &str, bool)] = &[
        ("10.231.0.1", "10.231.0.2", true),
        ("10.231.0.1", "10.232.0.2", false), // blocked destination
        ("10.232.0.1", "10.231.0.2", false), // blocked source
        ("fd31::1", "fd31::2", true),
        ("fd31::1", "fd32::2", false),
        ("fd32::1", "fd31::2", false),
    ];
    const ROUNDS: usize = 5;
    let received = thread::scope(|s| {
        let receiver = s.spawn(|| {
            in_netns(&pair.rx_ns, || {
                // One dual-stack socket: IPv4 datagrams arrive as v4-mapped addresses.
                let sock = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, PORT)).expect("bind [::]");
                sock.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 256];
                // Collect until the socket stays quiet for the timeout.
                while let Ok((n, from)) = sock.recv_from(&mut buf) {
                    got.push((from.ip(), String::from_utf8_lossy(&buf[..n]).into_owned()));
                }
                got
            })
        });
        thread::sleep(Duration::from_millis(300));
        in_netns(&pair.tx_ns, || {
            for round in 0..ROUNDS {
                for (src, dst, _) in cases {
                    let src: IpAddr = src.parse().unwrap();
                    let dst: IpAddr = dst.parse().unwrap();
                    let sock = UdpSocket::bind(SocketAddr::new(src, 0)).unwrap_or_else(|e| panic!("bind {src}: {e}"));
                    sock.send_to(format!("{src}>{dst}#{round}").as_bytes(), SocketAddr::new(dst, PORT))
                        .unwrap_or_else(|e| panic!("send {src} -> {dst}: {e}"));
                }
            }
        });
        receiver.join().expect("receiver")
    });

    for (src, dst, arrives) in cases {
        let n = received.iter().filter(|(_, text)| text.starts_with(&format!("{src}>{dst}#"))).count();
        let want = if *arrives { ROUNDS } else { 0 };
        assert_eq!(n, want, "{src} -> {dst}: {n} datagrams arrived, want {want}; all: {received:?}");
    }
    let counters = filter.counters().expect("read counters");
    let blocked = cases.iter().filter(|c| !c.2).count() * ROUNDS;
    let allowed = cases.iter().filter(|c| c.2).count() * ROUNDS;
    assert_eq!(counters.drop, blocked as u64, "{counters:?}");
    // Allowed datagrams plus whatever the kernel sent on its own (IPv6 router solicitations, MLD).
    assert!(counters.pass >= allowed as u64, "{counters:?}");
    assert_eq!((counters.redirect, counters.malformed, counters.aborted), (0, 0, 0), "{counters:?}");
    drop(filter);
}

/// An interface without native XDP (loopback) gets the program in generic mode.
#[test]
fn falls_back_to_generic_mode() {
    if skip_unless_root("falls_back_to_generic_mode") {
        return;
    }
    let pair = VethPair::new("g");
    pair.exec(&pair.rx_ns, &["link", "set", "lo", "up"]);
    in_netns(&pair.rx_ns, || {
        let mut filter = XdpFilter::load(None, &FilterOptions::default()).expect("load");
        assert_eq!(filter.attach("lo").expect("attach lo"), AttachMode::Generic);
        assert_eq!(filter.attached(), Some(("lo", AttachMode::Generic)));
        filter.detach().expect("detach");
        assert_eq!(filter.attached(), None);
    });
}

/// `tapio-load xdp attach` prints `stats` records whose counts follow the traffic, and detaches
/// on SIGINT.
#[test]
fn cli_prints_stats_and_detaches() {
    if skip_unless_root("cli_prints_stats_and_detaches") {
        return;
    }
    let pair = VethPair::new("c");
    pair.exec(&pair.rx_ns, &["link", "set", "lo", "up"]);
    let child = Command::new("ip")
        .args(["netns", "exec", &pair.rx_ns, env!("CARGO_BIN_EXE_tapio-load"), "xdp", "attach", "--iface", "lo"])
        .args(["--block", "127.0.0.2", "--block", "fd00::/8", "--interval-ms", "200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tapio-load xdp attach");
    thread::sleep(Duration::from_millis(800));
    in_netns(&pair.rx_ns, || {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        for _ in 0..3 {
            sock.send_to(b"x", (Ipv4Addr::new(127, 0, 0, 2), PORT)).unwrap();
        }
    });
    thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling the child we spawned; `ip netns exec` execs tapio-load in place.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(stderr.contains("attached to lo in generic mode"), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    let last = lines.last().unwrap();
    assert_eq!(last["monitor"], "xdp");
    assert_eq!(last["event"], "stats");
    assert_eq!(last["mode"], "generic");
    assert_eq!(last["comm"], "tapio-load");
    assert_eq!(last["drop"], 3, "{last}");
    // Detached: no XDP program left on the namespace's lo.
    let show = Command::new("ip").args(["-n", &pair.rx_ns, "link", "show", "lo"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&show.stdout).contains("xdp"), "{}", String::from_utf8_lossy(&show.stdout));
}

// ---------------------------------------------------------------------------------------------
// BPF_PROG_TEST_RUN tables.

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Inserts `tags` (ethertype, tci) VLAN headers after the MAC addresses of `frame`.
fn vlan(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    for (tpid, tci) in tags {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&tci.to_be_bytes());
    }
    out.extend_from_slice(&frame[12..]);
    out
}

/// An IPv6 frame whose UDP follows a hop-by-hop and a destination-options header.
fn udp6_with_ext_headers(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut f = udp6_frame(src, dst, 62);
    let udp = f.split_off(54);
    f[20] = 0; // next header: hop-by-hop options
    f.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop -> destination options, PadN
    f.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // destination options -> UDP
    f.extend_from_slice(&udp);
    let payload = (f.len() - 54) as u16;
    f[18..20].copy_from_slice(&payload.to_be_bytes());
    f
}

fn loaded(blocks: &[&str], match_mode: MatchMode) -> XdpFilter {
    let options = FilterOptions {
        blocks: blocks.iter().map(|b| b.parse::<Prefix>().unwrap()).collect(),
        match_mode,
        steer_cpus: None,
    };
    XdpFilter::load(None, &options).expect("load xdp_filter")
}

/// Runs each frame once and checks the action; then the counters must add up to the table.
fn run_table(filter: &XdpFilter, table: &[(&str, Vec<u8>, u32)]) -> Counters {
    let fd = filter.program_fd().expect("program fd");
    for (name, frame, want) in table {
        let got = test_run(fd, frame, 1).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.retval, *want, "{name}: action {} want {want}", got.retval);
    }
    filter.counters().expect("counters")
}

#[test]
fn test_run_verdicts() {
    if skip_unless_root("test_run_verdicts") {
        return;
    }
    let filter = loaded(&["10.232.0.0/16", "fd32::/16", "192.0.2.7"], MatchMode::Both);
    let ok4 = udp4_frame(v4("10.231.0.1"), v4("10.231.0.2"), 64);
    let ok6 = udp6_frame(v6("fd31::1"), v6("fd31::2"), 80);
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    let mut bad_ihl = ok4.clone();
    bad_ihl[14] = 0x44;
    let mut wrong_version = ok4.clone();
    wrong_version[14] = 0x65;
    let mut v6_in_v4_type = ok6.clone();
    v6_in_v4_type[12..14].copy_from_slice(&0x0800u16.to_be_bytes());

    let table: Vec<(&str, Vec<u8>, u32)> = vec![
        ("ipv4 allowed", ok4.clone(), XDP_PASS),
        ("ipv4 blocked source", udp4_frame(v4("10.232.9.9"), v4("10.231.0.2"), 64), XDP_DROP),
        ("ipv4 blocked destination", udp4_frame(v4("10.231.0.1"), v4("10.232.0.2"), 64), XDP_DROP),
        ("ipv4 host rule", udp4_frame(v4("192.0.2.7"), v4("10.231.0.2"), 64), XDP_DROP),
        ("ipv4 next to host rule", udp4_frame(v4("192.0.2.8"), v4("10.231.0.2"), 64), XDP_PASS),
        ("ipv4 prefix edge", udp4_frame(v4("10.233.0.1"), v4("10.231.0.2"), 64), XDP_PASS),
        ("ipv6 allowed", ok6.clone(), XDP_PASS),
        ("ipv6 blocked source", udp6_frame(v6("fd32:1::9"), v6("fd31::2"), 80), XDP_DROP),
        ("ipv6 blocked destination", udp6_frame(v6("fd31::1"), v6("fd32::2"), 80), XDP_DROP),
        ("ipv6 ext headers allowed", udp6_with_ext_headers(v6("fd31::1"), v6("fd31::2")), XDP_PASS),
        ("ipv6 ext headers blocked", udp6_with_ext_headers(v6("fd31::1"), v6("fd32::2")), XDP_DROP),
        ("802.1Q ipv4 blocked", vlan(&udp4_frame(v4("10.232.0.1"), v4("10.231.0.2"), 64), &[(0x8100, 7)]), XDP_DROP),
        ("802.1Q ipv4 allowed", vlan(&ok4, &[(0x8100, 7)]), XDP_PASS),
        (
            "802.1ad+802.1Q ipv6 blocked",
            vlan(&udp6_frame(v6("fd32::1"), v6("fd31::2"), 80), &[(0x88A8, 1), (0x8100, 2)]),
            XDP_DROP,
        ),
        ("non-IP (ARP)", arp, XDP_PASS),
        ("ethernet only, ipv4 type", ok4[..14].to_vec(), XDP_PASS),
        ("truncated ipv4 header", ok4[..33].to_vec(), XDP_PASS),
        ("truncated ipv6 header", ok6[..53].to_vec(), XDP_PASS),
        ("truncated vlan tag", vlan(&ok4, &[(0x8100, 7)])[..16].to_vec(), XDP_PASS),
        ("ipv4 ihl below 5", bad_ihl, XDP_PASS),
        ("ipv4 ethertype, version 6", wrong_version, XDP_PASS),
        ("ipv6 packet under the ipv4 ethertype", v6_in_v4_type, XDP_PASS),
    ];
    let c = run_table(&filter, &table);
    assert_eq!(c, Counters { pass: 7, drop: 8, redirect: 0, malformed: 7, aborted: 0 }, "{c:?}");
    assert_eq!(c.total(), table.len() as u64);
}

/// The match mode limits which address a blocklist applies to; it changes while loaded.
#[test]
fn test_run_match_modes() {
    if skip_unless_root("test_run_match_modes") {
        return;
    }
    let mut filter = loaded(&["10.232.0.0/16"], MatchMode::Src);
    let from_blocked = udp4_frame(v4("10.232.0.1"), v4("10.231.0.2"), 64);
    let to_blocked = udp4_frame(v4("10.231.0.1"), v4("10.232.0.2"), 64);
    let fd = filter.program_fd().unwrap();
    assert_eq!(test_run(fd, &from_blocked, 1).unwrap().retval, XDP_DROP);
    assert_eq!(test_run(fd, &to_blocked, 1).unwrap().retval, XDP_PASS);
    filter.set_config(XdpFilterConfig { match_mode: 2, ..Default::default() }).unwrap();
    let fd = filter.program_fd().unwrap();
    assert_eq!(test_run(fd, &from_blocked, 1).unwrap().retval, XDP_PASS);
    assert_eq!(test_run(fd, &to_blocked, 1).unwrap().retval, XDP_DROP);
    // Removing the rule lets both through.
    filter.unblock("10.232.0.0/16".parse().unwrap()).unwrap();
    filter.set_config(XdpFilterConfig { match_mode: 3, ..Default::default() }).unwrap();
    let fd = filter.program_fd().unwrap();
    assert_eq!(test_run(fd, &from_blocked, 1).unwrap().retval, XDP_PASS);
    assert_eq!(test_run(fd, &to_blocked, 1).unwrap().retval, XDP_PASS);
}

/// Steering: with a filled slot the program redirects into the CPU map; with steering on but a
/// slot the loader never filled, it passes the packet and counts it aborted instead of sending
/// it to an empty CPU-map entry.
#[test]
fn test_run_steering() {
    if skip_unless_root("test_run_steering") {
        return;
    }
    let options = FilterOptions { blocks: vec!["10.232.0.0/16".parse().unwrap()], steer_cpus: Some(1), ..Default::default() };
    let mut filter = XdpFilter::load(None, &options).expect("load with steering");
    let ok = udp4_frame(v4("10.231.0.1"), v4("10.231.0.2"), 64);
    let blocked = udp4_frame(v4("10.232.0.1"), v4("10.231.0.2"), 64);
    let fd = filter.program_fd().unwrap();
    assert_eq!(test_run(fd, &ok, 1).unwrap().retval, XDP_REDIRECT);
    assert_eq!(test_run(fd, &blocked, 1).unwrap().retval, XDP_DROP, "blocklists come before steering");
    // Claim two slots where only slot 0 exists: flows hashing to slot 1 must not be redirected.
    filter.set_config(XdpFilterConfig { match_mode: 3, steer: 1, nslots: 2, _pad0: 0 }).unwrap();
    let fd = filter.program_fd().unwrap();
    let mut actions = std::collections::BTreeSet::new();
    for host in 1..=16u8 {
        let f = udp4_frame(Ipv4Addr::new(10, 231, 1, host), v4("10.231.0.2"), 64);
        actions.insert(test_run(fd, &f, 1).unwrap().retval);
    }
    assert_eq!(actions, [XDP_PASS, XDP_REDIRECT].into(), "both slots should be hit by 16 flows");
    let c = filter.counters().unwrap();
    assert_eq!(c.drop, 1);
    assert!(c.aborted > 0 && c.redirect > 1, "{c:?}");
    assert_eq!(c.aborted + c.redirect, 17, "{c:?}");
    // Steering off again: everything passes locally.
    filter.set_config(XdpFilterConfig { match_mode: 3, ..Default::default() }).unwrap();
    assert_eq!(test_run(filter.program_fd().unwrap(), &ok, 1).unwrap().retval, XDP_PASS);
}

/// `check_load` verifies the program unattached and reports its verified instruction count.
#[test]
fn check_load_reports_instructions() {
    if skip_unless_root("check_load_reports_instructions") {
        return;
    }
    let insns = xdp_filter::check_load(None).expect("verifier accepts xdp_filter");
    assert!(insns.is_some_and(|n| n > 10), "{insns:?}");
}

/// The Rust mirrors of the config and slot structs match the object's BTF.
#[test]
fn mirrors_match_object_btf() {
    for object in tapio_bundle::OBJECTS.iter().filter(|o| o.monitor == xdp_filter::MONITOR) {
        let btf = object_btf(object.file, object.bytes).expect("object BTF");
        check(&btf, &mirror_layout!("xdp_filter_config", XdpFilterConfig { match_mode, steer, nslots, _pad0 }))
            .unwrap_or_else(|e| panic!("{}: {e}", object.file));
        check(&btf, &mirror_layout!("xdp_filter_cpu_slot", XdpFilterCpuSlot { cpu, valid }))
            .unwrap_or_else(|e| panic!("{}: {e}", object.file));
    }
}
