//! The deterministic scenarios, each written once behind the [`Scenario`] trait (issue 16).
//!
//! A scenario drives known traffic or actions from the running process, collects its own
//! monitors' events, checks the key fields with named checks, and normalises its events into
//! one snapshot (tapio_testkit::snapshot) compared with `snapshots/<monitor>/<scenario>.snap`.
//! What it returns is an [`Outcome`]: its checks, its skips (each with the kernel features
//! ([`Needs`]) it lacks, so tapio-kernel-gates can judge it) and its snapshots, as the typed lines
//! of tapio-matrix-protocol in the order they happened.
//!
//! Two callers run the same scenarios: the matrix guest (tapio-guest) in every VM and on the
//! host row, and the host tests (verifier-matrix/guest/tests/scenarios.rs), one per scenario,
//! on this kernel. Actors re-execute the running binary (`<exe> security-actor`, ...):
//! [`actor`] is the dispatch every binary that runs scenarios calls first.
//!
//! It owns the scenarios, their actors and the netlink/veth helpers they set up with. It may
//! import the runtime (to drain loaded monitors), the decoder, tapio-features, the test kit's
//! normaliser and workloads, and the protocol's line types; it may not import the agent, the
//! harness or tapio-snapshots (its callers compare the snapshots), nor anyhow.
//!
//! Every scenario first throws away what earlier work left in its rings and then keeps only the
//! events of its own processes or ports, so one scenario's traffic (or, on the host, the rest of
//! the machine's) never reaches another's snapshot.

pub mod advanced;
pub mod dns;
pub mod dns_hostile;
mod netlink;
pub mod network;
pub mod oom;
pub mod process;
pub mod process_lineage;
pub mod security;
pub mod security_mount;
pub mod security_ns;
pub mod tcp_veth;
pub mod udp_dns;
pub mod veth;
pub mod xdp;
pub mod xdp_test_run;

use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    process::ExitCode,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::Value;
use tapio_decode::events::{self, DecodeOptions, Event};
use tapio_runtime::monitors::{self, LoadedMonitor};
use tapio_testkit::snapshot::{self, Roles};

pub use tapio_matrix_protocol::{Line, Needs};

/// The longest any scenario waits for an event the kernel emits after a syscall returned.
pub const EVENT_WAIT: Duration = Duration::from_secs(5);

/// One scenario: what it needs loaded, and a run that returns its checks, skips and snapshots.
pub trait Scenario: Sync {
    /// Its name, `<monitor>.<scenario>`, as its snapshot file is named; its checks and skips
    /// start with the monitor (most with the whole name).
    fn name(&self) -> &'static str;
    /// The monitors of the catalog it needs loaded and attached (none for one that loads its
    /// own program, as the XDP filter does). A missing one is a failed check, not a skip: every
    /// monitor must load on every kernel of the matrix.
    fn monitors(&self) -> &'static [&'static str];
    /// Runs it against the loaded monitors.
    fn run(&self, loaded: &mut [LoadedMonitor]) -> Outcome;
}

/// What one scenario run produced: its check, skip and snapshot lines (and any other result
/// line, such as an event count), in order.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    lines: Vec<Line>,
}

impl Outcome {
    /// Records one result line.
    pub fn line(&mut self, line: &Line) {
        self.lines.push(line.clone());
    }

    /// Every line, in the order the scenario produced them.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// Every line, for the caller to write.
    pub fn into_lines(self) -> Vec<Line> {
        self.lines
    }

    /// The checks: (name, pass, detail).
    pub fn checks(&self) -> impl Iterator<Item = (&str, bool, &str)> {
        self.lines.iter().filter_map(|l| match l {
            Line::Check { name, pass, detail } => Some((name.as_str(), *pass, detail.as_str())),
            _ => None,
        })
    }

    /// The skips: (name, the kernel's reason, the features it needs).
    pub fn skips(&self) -> impl Iterator<Item = (&str, &str, &Needs)> {
        self.lines.iter().filter_map(|l| match l {
            Line::Skip { name, reason, needs } => Some((name.as_str(), reason.as_str(), needs)),
            _ => None,
        })
    }

    /// The snapshots: (monitor, scenario, normalised events as a JSON array).
    pub fn snapshots(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.lines.iter().filter_map(|l| match l {
            Line::Snapshot { monitor, scenario, body } => Some((monitor.as_str(), scenario.as_str(), body.as_str())),
            _ => None,
        })
    }
}

/// A scenario written as a plain function over an [`Outcome`].
struct Case {
    name: &'static str,
    monitors: &'static [&'static str],
    run: fn(&mut Outcome, &mut [LoadedMonitor]),
}

impl Scenario for Case {
    fn name(&self) -> &'static str {
        self.name
    }

    fn monitors(&self) -> &'static [&'static str] {
        self.monitors
    }

    fn run(&self, loaded: &mut [LoadedMonitor]) -> Outcome {
        let mut out = Outcome::default();
        (self.run)(&mut out, loaded);
        out
    }
}

/// Every scenario, in the order the guest runs them.
pub static SCENARIOS: &[&dyn Scenario] = &[
    &Case { name: "process.exec_chain", monitors: &["process"], run: process::run },
    &Case { name: "process.lineage", monitors: &["process"], run: process_lineage::run },
    &Case { name: "security.capability", monitors: &["security"], run: process::run_capability },
    &Case { name: "network.tcp_loopback", monitors: &["network", "kernel"], run: network::run },
    &Case { name: "kernel.oom_kill", monitors: &["kernel"], run: oom::run },
    &Case { name: "dns.udp_tcp", monitors: &["dns"], run: dns::run },
    &Case { name: "network.udp_dns", monitors: &["network"], run: udp_dns::run },
    &Case { name: "security.cred_ns", monitors: &["security"], run: security::run },
    &Case { name: "security.ns_caps_module", monitors: &["security"], run: security_ns::run },
    &Case { name: "security.mount_api", monitors: &["security"], run: security_mount::run },
    &Case { name: "dns.hostile", monitors: &["dns"], run: dns_hostile::run },
    &Case { name: "advanced.flood_dedup", monitors: &["advanced"], run: advanced::run },
    &Case { name: "network.tcp_veth", monitors: &["network"], run: tcp_veth::run },
    &Case { name: "xdp.veth_prefixes", monitors: &[], run: |out, _| xdp::run(out) },
    &Case { name: "xdp.test_run", monitors: &[], run: |out, _| xdp_test_run::run(out) },
];

/// The scenario called `name` (`<monitor>.<scenario>`).
pub fn scenario(name: &str) -> Option<&'static dyn Scenario> {
    SCENARIOS.iter().copied().find(|s| s.name() == name)
}

/// Runs an actor when `args` (the process's argv) ask for one: the processes the scenarios start
/// by re-executing the running binary. `None` when argv names no actor.
pub fn actor(args: &[String]) -> Option<ExitCode> {
    match args.get(1).map(String::as_str) {
        // `exit-with <code> <tag>`: process/exec_chain's leaf; the tag only marks its argv.
        Some("exit-with") => Some(ExitCode::from(args.get(2).and_then(|c| c.parse::<u8>().ok()).unwrap_or(0))),
        // `threads-exit <threads> <late_ms> <group|each>`: tapio_testkit::workload::threads_exit.
        Some("threads-exit") => {
            let threads = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(4);
            let late = Duration::from_millis(args.get(3).and_then(|n| n.parse().ok()).unwrap_or(0));
            match args.get(4).and_then(|m| tapio_testkit::workload::ThreadsExit::parse(m)) {
                Some(mode) => tapio_testkit::workload::threads_exit(threads, late, mode),
                None => Some(ExitCode::from(2)),
            }
        }
        // `lineage <nonce>`: process/lineage's process tree.
        Some("lineage") => Some(process_lineage::actor(args.get(2).map_or("0", String::as_str))),
        Some("security-actor") => Some(security::actor()),
        Some("security-ns-actor") => Some(security_ns::actor()),
        Some("security-mount-actor") => Some(security_mount::actor()),
        Some("advanced-flood") => Some(advanced::flooder()),
        // `memory-hog <cgroup.procs> <MiB> <wait|exit>`: the processes of kernel.oom_kill.
        Some("memory-hog") => {
            use tapio_testkit::workload::AfterHog;
            let procs = std::path::Path::new(args.get(2).map_or("", String::as_str));
            let mib = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(0);
            let after = if args.get(4).map(String::as_str) == Some("wait") { AfterHog::Wait } else { AfterHog::Exit };
            tapio_testkit::workload::memory_hog(procs, mib, after)
        }
        _ => None,
    }
}

/// One named pass/fail line for the report's "checks passed" column.
pub fn check(out: &mut Outcome, name: &str, pass: bool, detail: String) {
    out.line(&Line::check(name, pass, detail));
}

/// UDP client addresses the scenarios have used. The network monitor folds a datagram into a flow
/// it saw less than a second ago from the same process, tuple and direction, so a scenario that
/// must see its flows as new ([`fresh_udp_client`]) avoids them.
static UDP_CLIENTS: Mutex<Vec<SocketAddr>> = Mutex::new(Vec::new());

/// Binds a UDP socket on `ip` with a kernel-chosen port and records its address.
pub fn udp_client(ip: IpAddr) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(SocketAddr::new(ip, 0))?;
    UDP_CLIENTS.lock().expect("udp clients").push(sock.local_addr()?);
    Ok(sock)
}

/// A UDP socket on `ip` whose address no earlier [`udp_client`] had. Sockets that drew a used
/// port are kept open until one does not, so the kernel cannot hand the same port back.
pub fn fresh_udp_client(ip: IpAddr) -> io::Result<UdpSocket> {
    let mut drawn = Vec::new();
    loop {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0))?;
        let addr = sock.local_addr()?;
        let mut used = UDP_CLIENTS.lock().expect("udp clients");
        if !used.contains(&addr) {
            used.push(addr);
            return Ok(sock);
        }
        drawn.push(sock);
    }
}

/// The loaded monitor called `name`, or a failed check naming the scenario that needed it.
pub fn monitor<'a>(out: &mut Outcome, loaded: &'a mut [LoadedMonitor], name: &str, scenario: &str) -> Option<&'a mut LoadedMonitor> {
    let found = loaded.iter_mut().find(|m| m.spec.name == name);
    if found.is_none() {
        check(out, &format!("{scenario}.monitor_{name}"), false, format!("monitor {name} did not load"));
    }
    found
}

/// Records lost so far: the ring's own counter plus perf's lost samples.
pub fn lost(m: &LoadedMonitor) -> u64 {
    monitors::stat(&m.ebpf, 1).unwrap_or(0) + m.events.lost
}

/// Drops whatever earlier work left waiting in a monitor's buffer.
pub fn discard(m: &mut LoadedMonitor) {
    while m.events.next().is_some() {}
}

/// Decoded events of one monitor: what was kept, and the decode errors.
#[derive(Default)]
pub struct Collected {
    pub events: Vec<Event>,
    pub errors: Vec<String>,
}

impl Collected {
    pub fn values(&self) -> Vec<Value> {
        self.events.iter().map(|e| serde_json::to_value(e).expect("events serialize")).collect()
    }
}

/// Drains `m`, keeping the events `keep` accepts, until `done` holds for what was kept or
/// `timeout` passes. Between drains it blocks on the buffer's readiness, not on a guessed delay.
pub fn collect(
    m: &mut LoadedMonitor,
    keep: impl Fn(&Event) -> bool,
    done: impl Fn(&[Event]) -> bool,
    timeout: Duration,
) -> Collected {
    let deadline = Instant::now() + timeout;
    let options = DecodeOptions::default();
    let mut c = Collected::default();
    loop {
        while let Some(record) = m.events.next() {
            match events::decode_all(&record, &options) {
                Ok(decoded) => c.events.extend(decoded.into_iter().filter(|e| keep(e))),
                Err(e) => c.errors.push(e.to_string()),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if done(&c.events) || left.is_zero() {
            return c;
        }
        if let Err(e) = m.events.wait(left) {
            c.errors.push(format!("wait for events: {e}"));
            return c;
        }
    }
}

/// Normalises `events` with `roles` and sends them as the snapshot of (monitor, scenario); a
/// failed redaction check is a failed check line instead.
pub fn snapshot(out: &mut Outcome, monitor: &str, scenario: &str, events: &[Value], roles: &Roles) {
    match snapshot::normalize(events, roles) {
        Ok(n) => out.line(&Line::Snapshot {
            monitor: monitor.to_owned(),
            scenario: scenario.to_owned(),
            body: snapshot::render(&n),
        }),
        Err(e) => check(out, &format!("{monitor}.{scenario}.snapshot_normalize"), false, e.to_string()),
    }
}

/// The agent's executable, as the process scenario names it.
pub fn current_exe() -> String {
    std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "/init".to_owned())
}

/// The cgroup v2 id the agent runs in (the inode of its directory), which its workloads inherit:
/// the one cgroup a scenario's events may name (tapio_testkit::snapshot::Roles::cgroups). Empty
/// when it cannot be read, which leaves the check off rather than failing every scenario.
pub fn own_cgroups() -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    let Ok(Some(root)) = tapio_features::cgroup2::mounted_root() else { return Vec::new() };
    let Some(path) = std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|c| c.lines().find_map(|l| l.strip_prefix("0::").map(str::to_owned)))
    else {
        return Vec::new();
    };
    std::fs::metadata(root.join(path.trim().trim_start_matches('/'))).map(|m| vec![m.ino()]).unwrap_or_default()
}

/// Forks; the child runs `f` and leaves with `_exit(f())`. The agent may have other threads, so
/// `f` must make raw syscalls only (async-signal-safe: no allocation, no locks); what it returns
/// names the step that failed.
pub(crate) fn fork_child(f: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
    // SAFETY: the child only runs `f`, which makes raw syscalls, then `_exit`s without running
    // the parent's destructors.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = f();
        // SAFETY: as above.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

/// Waits for the child `pid` and returns its exit code, or -1 when it did not exit normally.
pub(crate) fn wait_exit(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    if r == pid && libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 }
}

/// The calling thread's errno.
pub(crate) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The calling thread's id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// The initial mount namespace's inode: fixed on 6.18+ (`MNT_NS_INIT_INO`), else pid 1's.
const MNT_NS_INIT_INO: u64 = 0xEFFF_FFF8;

/// Makes `in_container` relative to the agent's own mount namespace when the agent itself runs
/// outside the initial one.
///
/// `in_container` compares a process's mount namespace with the initial one. In a guest, and on
/// a host in its initial namespace, the agent is a host process and this does nothing. On a host
/// where the whole suite runs in a private mount namespace (../shared/fresh-ci does, to start
/// without tracefs) every process of the suite is, rightly, `in_container: true`, and the
/// initial namespace cannot be joined (pid 1's namespace file is refused there). The scenarios
/// ask whether a process left *our* namespace, so there each event's value is recomputed from its
/// own `mnt_ns`: true exactly when it differs from the agent's.
pub(crate) fn relative_in_container(values: &mut [Value]) {
    use std::os::unix::fs::MetadataExt;
    let Ok(own) = std::fs::metadata("/proc/self/ns/mnt").map(|m| m.ino()) else { return };
    let initial = std::fs::metadata("/proc/1/ns/mnt").map(|m| m.ino()).unwrap_or(MNT_NS_INIT_INO);
    if own == initial {
        return;
    }
    for v in values.iter_mut() {
        if let (Some(ns), true) = (v["mnt_ns"].as_u64(), v.get("in_container").is_some()) {
            v["in_container"] = Value::Bool(ns != own);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_sorts_its_lines_into_checks_skips_and_snapshots() {
        let mut out = Outcome::default();
        check(&mut out, "dns.udp_tcp.decode", true, "ok".to_owned());
        out.line(&Line::skip("network.tcp_loopback.connect_attempt_v4", "no fexit", Needs::one("fentry")));
        out.line(&Line::Snapshot { monitor: "dns".to_owned(), scenario: "udp_tcp".to_owned(), body: "[]".to_owned() });
        out.line(&Line::Events { monitor: "dns".to_owned(), count: 2 });
        assert_eq!(out.checks().collect::<Vec<_>>(), [("dns.udp_tcp.decode", true, "ok")]);
        assert_eq!(out.skips().map(|(n, r, needs)| (n, r, needs.clone())).collect::<Vec<_>>(), [(
            "network.tcp_loopback.connect_attempt_v4",
            "no fexit",
            Needs::one("fentry")
        )]);
        assert_eq!(out.snapshots().collect::<Vec<_>>(), [("dns", "udp_tcp", "[]")]);
        assert_eq!(out.into_lines().len(), 4, "every line is kept, in order");
    }

    #[test]
    fn scenario_names_are_unique_and_name_a_monitor() {
        let mut names: Vec<&str> = SCENARIOS.iter().map(|s| s.name()).collect();
        for name in &names {
            let monitor = name.split_once('.').map(|(m, _)| m);
            assert!(
                monitor.is_some_and(|m| tapio_runtime::monitors::monitor(m).is_some() || m == "xdp"),
                "{name}: not `<monitor>.<scenario>`"
            );
            assert!(scenario(name).is_some_and(|s| s.name() == *name));
        }
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a scenario name is used twice");
        assert!(SCENARIOS.iter().flat_map(|s| s.monitors()).all(|m| tapio_runtime::monitors::monitor(m).is_some()));
    }
}
