//! xdp/test_run: the XDP filter's verdict logic on frames it is handed with `BPF_PROG_TEST_RUN`
//! (no interface, no traffic): blocked and allowed addresses of both families, a host rule and its
//! neighbour, IPv6 extension headers, 802.1Q and 802.1ad tags, frames that are not IP or are cut
//! short or malformed (passed, counted malformed); then the match mode changed while loaded, a
//! rule removed, and CPU steering (redirect into the CPU map, blocklists first, a slot the loader
//! never filled passed and counted aborted).
//!
//! BPF_PROG_TEST_RUN runs XDP programs since 4.12 (net/bpf/test_run.c, `bpf_prog_test_run_xdp`),
//! older than any row of the matrix. It only returns the program's action: a redirect is not
//! carried out.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
};

use tapio_runtime::monitors::xdp_filter::{
    test_run, udp4_frame, udp6_frame, Counters, FilterOptions, MatchMode, Prefix, XdpFilter, XdpFilterConfig, XDP_DROP, XDP_PASS,
    XDP_REDIRECT,
};

use super::check;
use crate::Outcome;

const SCENARIO: &str = "xdp.test_run";

fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("the scenario's addresses parse")
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("the scenario's addresses parse")
}

/// `frame` with `tags` (TPID, TCI) VLAN headers inserted after the MAC addresses.
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

fn load(blocks: &[&str], match_mode: MatchMode, steer_cpus: Option<u32>) -> Result<XdpFilter, String> {
    let blocks = blocks.iter().map(|b| b.parse::<Prefix>().expect("the scenario's prefixes parse")).collect();
    XdpFilter::load(None, &FilterOptions { blocks, match_mode, steer_cpus }).map_err(|e| format!("load xdp_filter: {e}"))
}

/// The action the loaded program takes on `frame`.
fn action(filter: &XdpFilter, frame: &[u8]) -> Result<u32, String> {
    let fd = filter.program_fd().map_err(|e| e.to_string())?;
    test_run(fd, frame, 1).map(|r| r.retval).map_err(|e| format!("test run: {e}"))
}

fn action_name(a: u32) -> &'static str {
    match a {
        XDP_PASS => "pass",
        XDP_DROP => "drop",
        XDP_REDIRECT => "redirect",
        _ => "other",
    }
}

pub fn run(out: &mut Outcome) {
    verdicts(out);
    match_modes(out);
    steering(out);
}

/// One frame per case, each with the action it must get; then the counters add up to the table.
fn verdicts(out: &mut Outcome) {
    let filter = match load(&["10.232.0.0/16", "fd32::/16", "192.0.2.7"], MatchMode::Both, None) {
        Ok(f) => f,
        Err(e) => return check(out, &format!("{SCENARIO}.verdicts"), false, e),
    };
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
        ("ipv4_allowed", ok4.clone(), XDP_PASS),
        ("ipv4_blocked_source", udp4_frame(v4("10.232.9.9"), v4("10.231.0.2"), 64), XDP_DROP),
        ("ipv4_blocked_destination", udp4_frame(v4("10.231.0.1"), v4("10.232.0.2"), 64), XDP_DROP),
        ("ipv4_host_rule", udp4_frame(v4("192.0.2.7"), v4("10.231.0.2"), 64), XDP_DROP),
        ("ipv4_next_to_host_rule", udp4_frame(v4("192.0.2.8"), v4("10.231.0.2"), 64), XDP_PASS),
        ("ipv4_prefix_edge", udp4_frame(v4("10.233.0.1"), v4("10.231.0.2"), 64), XDP_PASS),
        ("ipv6_allowed", ok6.clone(), XDP_PASS),
        ("ipv6_blocked_source", udp6_frame(v6("fd32:1::9"), v6("fd31::2"), 80), XDP_DROP),
        ("ipv6_blocked_destination", udp6_frame(v6("fd31::1"), v6("fd32::2"), 80), XDP_DROP),
        ("ipv6_ext_headers_allowed", udp6_with_ext_headers(v6("fd31::1"), v6("fd31::2")), XDP_PASS),
        ("ipv6_ext_headers_blocked", udp6_with_ext_headers(v6("fd31::1"), v6("fd32::2")), XDP_DROP),
        ("vlan_ipv4_blocked", vlan(&udp4_frame(v4("10.232.0.1"), v4("10.231.0.2"), 64), &[(0x8100, 7)]), XDP_DROP),
        ("vlan_ipv4_allowed", vlan(&ok4, &[(0x8100, 7)]), XDP_PASS),
        ("qinq_ipv6_blocked", vlan(&udp6_frame(v6("fd32::1"), v6("fd31::2"), 80), &[(0x88A8, 1), (0x8100, 2)]), XDP_DROP),
        ("non_ip_arp", arp, XDP_PASS),
        ("ethernet_only_ipv4_type", ok4[..14].to_vec(), XDP_PASS),
        ("truncated_ipv4_header", ok4[..33].to_vec(), XDP_PASS),
        ("truncated_ipv6_header", ok6[..53].to_vec(), XDP_PASS),
        ("truncated_vlan_tag", vlan(&ok4, &[(0x8100, 7)])[..16].to_vec(), XDP_PASS),
        ("ipv4_ihl_below_5", bad_ihl, XDP_PASS),
        ("ipv4_type_version_6", wrong_version, XDP_PASS),
        ("ipv6_under_the_ipv4_type", v6_in_v4_type, XDP_PASS),
    ];
    for (case, frame, want) in &table {
        let (pass, detail) = match action(&filter, frame) {
            Ok(got) => (got == *want, format!("{} bytes: {} (want {})", frame.len(), action_name(got), action_name(*want))),
            Err(e) => (false, e),
        };
        check(out, &format!("{SCENARIO}.{case}"), pass, detail);
    }
    let want = Counters { pass: 7, drop: 8, redirect: 0, malformed: 7, aborted: 0 };
    let (pass, detail) = match filter.counters() {
        Ok(c) => (c == want && c.total() == table.len() as u64, format!("{c:?} (want {want:?}: one verdict per frame, {} frames)", table.len())),
        Err(e) => (false, e.to_string()),
    };
    check(out, &format!("{SCENARIO}.counters"), pass, detail);
}

/// The match mode limits which address a blocklist applies to; it changes while loaded, and a
/// removed rule lets both directions through.
fn match_modes(out: &mut Outcome) {
    let name = format!("{SCENARIO}.match_modes");
    let result = (|| -> Result<Vec<(&str, u32, u32)>, String> {
        let mut filter = load(&["10.232.0.0/16"], MatchMode::Src, None)?;
        let from_blocked = udp4_frame(v4("10.232.0.1"), v4("10.231.0.2"), 64);
        let to_blocked = udp4_frame(v4("10.231.0.1"), v4("10.232.0.2"), 64);
        let mut seen = vec![("src", action(&filter, &from_blocked)?, action(&filter, &to_blocked)?)];
        filter.set_config(XdpFilterConfig { match_mode: 2, ..Default::default() }).map_err(|e| e.to_string())?;
        seen.push(("dst", action(&filter, &from_blocked)?, action(&filter, &to_blocked)?));
        filter.unblock("10.232.0.0/16".parse().expect("a prefix")).map_err(|e| e.to_string())?;
        filter.set_config(XdpFilterConfig { match_mode: 3, ..Default::default() }).map_err(|e| e.to_string())?;
        seen.push(("both, rule removed", action(&filter, &from_blocked)?, action(&filter, &to_blocked)?));
        Ok(seen)
    })();
    let want = [("src", XDP_DROP, XDP_PASS), ("dst", XDP_PASS, XDP_DROP), ("both, rule removed", XDP_PASS, XDP_PASS)];
    let (pass, detail) = match result {
        Ok(seen) => {
            let text: Vec<String> = seen.iter().map(|(m, f, t)| format!("{m}: from {} to {}", action_name(*f), action_name(*t))).collect();
            (seen == want, format!("from and to the blocked prefix: {text:?}"))
        }
        Err(e) => (false, e),
    };
    check(out, &name, pass, detail);
}

/// Steering: with a filled slot the program redirects into the CPU map (blocklists first); with
/// two slots claimed where only one was filled, flows hashing to the empty one are passed and
/// counted aborted instead of being sent to an empty CPU-map entry; steering off, all pass.
fn steering(out: &mut Outcome) {
    let name = format!("{SCENARIO}.steering");
    let result = (|| -> Result<String, String> {
        let mut filter = load(&["10.232.0.0/16"], MatchMode::Both, Some(1))?;
        let ok = udp4_frame(v4("10.231.0.1"), v4("10.231.0.2"), 64);
        let blocked = udp4_frame(v4("10.232.0.1"), v4("10.231.0.2"), 64);
        let (first, blocked_action) = (action(&filter, &ok)?, action(&filter, &blocked)?);
        filter.set_config(XdpFilterConfig { match_mode: 3, steer: 1, nslots: 2, _pad0: 0 }).map_err(|e| e.to_string())?;
        let mut actions = BTreeSet::new();
        for host in 1..=16u8 {
            actions.insert(action(&filter, &udp4_frame(Ipv4Addr::new(10, 231, 1, host), v4("10.231.0.2"), 64))?);
        }
        let c = filter.counters().map_err(|e| e.to_string())?;
        filter.set_config(XdpFilterConfig { match_mode: 3, ..Default::default() }).map_err(|e| e.to_string())?;
        let off = action(&filter, &ok)?;
        let detail = format!(
            "one slot: {} (want redirect), blocked {} (want drop); two slots claimed, one filled: {:?} over 16 flows (want pass and redirect), {c:?} (want drop 1, aborted + redirect 17, both > 0); steering off: {}",
            action_name(first),
            action_name(blocked_action),
            actions.iter().map(|a| action_name(*a)).collect::<Vec<_>>(),
            action_name(off)
        );
        let pass = first == XDP_REDIRECT
            && blocked_action == XDP_DROP
            && actions == [XDP_PASS, XDP_REDIRECT].into()
            && c.drop == 1
            && c.aborted > 0
            && c.redirect > 1
            && c.aborted + c.redirect == 17
            && off == XDP_PASS;
        if pass { Ok(detail) } else { Err(detail) }
    })();
    let (pass, detail) = match result {
        Ok(d) => (true, d),
        Err(e) => (false, e),
    };
    check(out, &name, pass, detail);
}
