//! Deterministic traffic scenarios for the network, kernel, dns, security and advanced monitors
//! (issue 7).
//!
//! Each scenario drives known traffic from the agent, collects its own monitors' events, checks
//! the key fields with explicit `check` lines, and sends the normalised events as one snapshot
//! line that the harness compares with `snapshots/<monitor>/<scenario>.snap`. The process
//! scenario stays in `checks.rs`.
//!
//! Every scenario first throws away what earlier work left in its rings and then keeps only the
//! events of its own processes or ports, so one scenario's traffic (or, on the host row, the rest
//! of the machine's) never reaches another's snapshot.

pub mod advanced;
pub mod dns;
pub mod dns_hostile;
pub mod network;
pub mod oom;
pub mod security;
pub mod security_mount;
pub mod security_ns;
pub mod tcp_veth;
pub mod udp_dns;
pub mod veth;
pub mod xdp;

use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::Value;
use tapio_decode::events::{self, DecodeOptions, Event};
use tapio_runtime::monitors::{self, LoadedMonitor};
use tapio_testkit::snapshot::{self, Roles};

use tapio_matrix_protocol::Line;

use crate::report::Reporter;

/// The longest any scenario waits for an event the kernel emits after a syscall returned.
pub const EVENT_WAIT: Duration = Duration::from_secs(5);

/// One named pass/fail line for the report's "checks passed" column.
pub fn check(out: &mut Reporter, name: &str, pass: bool, detail: String) {
    out.line(&Line::check(name, pass, detail));
}

/// Runs every scenario whose monitors loaded; a missing monitor is a failed check, not a skip,
/// because every monitor must load on every kernel of the matrix.
pub fn run_all(out: &mut Reporter, loaded: &mut [LoadedMonitor]) {
    network::run(out, loaded);
    oom::run(out, loaded);
    dns::run(out, loaded);
    udp_dns::run(out, loaded);
    security::run(out, loaded);
    security_ns::run(out, loaded);
    security_mount::run(out, loaded);
    dns_hostile::run(out, loaded);
    advanced::run(out, loaded);
    tcp_veth::run(out, loaded);
    xdp::run(out);
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
pub fn monitor<'a>(out: &mut Reporter, loaded: &'a mut [LoadedMonitor], name: &str, scenario: &str) -> Option<&'a mut LoadedMonitor> {
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
pub fn snapshot(out: &mut Reporter, monitor: &str, scenario: &str, events: &[Value], roles: &Roles) {
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
pub(super) fn relative_in_container(values: &mut [Value]) {
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
