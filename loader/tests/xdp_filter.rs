//! xdp_filter through the agent and offline: the `tapio-load xdp attach` CLI, the `check` path's
//! verified instruction count, and the Rust mirrors against the object's BTF. What the program
//! does on a kernel is checked by the shared scenarios (tapio-scenarios), run on this kernel by
//! verifier-matrix/guest/tests/scenarios.rs and in every VM of the matrix: xdp.veth_prefixes
//! (real UDP over a veth pair, blocked sources and destinations under `MatchMode::Both`, native
//! mode on veth, generic mode on loopback) and xdp.test_run (`BPF_PROG_TEST_RUN` tables: non-IP,
//! truncated and malformed headers, IPv6 extension headers, VLAN tags, match modes, steering).

use std::{
    fs::File,
    net::{Ipv4Addr, UdpSocket},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use tapio_object::{inspect::object_btf, layout::check, mirror_layout};
use tapio_runtime::monitors::xdp_filter::{self, XdpFilterConfig, XdpFilterCpuSlot};

#[path = "common/skip.rs"]
mod skip;

fn skip_unless_root(test: &str) -> bool {
    skip::unless_root(test, "CAP_BPF, CAP_NET_ADMIN to load XDP and make namespaces")
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).stderr(Stdio::piped()).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A network namespace the test makes, with its loopback up; deleted on drop, also when the
/// test panics.
struct TestNs {
    name: String,
}

impl TestNs {
    fn new(tag: &str) -> Self {
        let ns = Self { name: format!("tapio-xdp-{tag}-{}", std::process::id()) };
        ip(&["netns", "add", &ns.name]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
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

/// `tapio-load xdp attach` prints `stats` records whose counts follow the traffic, and detaches
/// on SIGINT.
#[test]
fn cli_prints_stats_and_detaches() {
    if skip_unless_root("cli_prints_stats_and_detaches") {
        return;
    }
    let ns = TestNs::new("c");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_tapio-load"), "xdp", "attach", "--iface", "lo"])
        .args(["--block", "127.0.0.2", "--block", "fd00::/8", "--interval-ms", "200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tapio-load xdp attach");
    thread::sleep(Duration::from_millis(800));
    in_netns(&ns.name, || {
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
    let show = Command::new("ip").args(["-n", &ns.name, "link", "show", "lo"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&show.stdout).contains("xdp"), "{}", String::from_utf8_lossy(&show.stdout));
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
