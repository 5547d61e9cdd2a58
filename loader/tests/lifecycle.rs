//! The loader's lifecycle on the real kernel, as `bpftool` sees it: after SIGKILL nothing of
//! ours stays loaded or attached; with `--pin-path`, programs survive SIGTERM, a restart adopts
//! them (same ids, events keep coming, including one emitted while no loader ran), and
//! `tapio-load unpin` frees them.

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tapio_runtime::monitors::{cgroup_watch, MONITORS};

/// How long the kernel gets to free programs and links after their last reference goes:
/// freeing is asynchronous (RCU), so the checks poll up to this bound.
const FREE_TIMEOUT: Duration = Duration::from_secs(10);

/// The kernel keeps the first 15 bytes of a program's name (`BPF_OBJ_NAME_LEN` - 1); bpftool
/// prints the full name from the program's BTF when it has one, the truncated one otherwise.
const KERNEL_NAME_MAX: usize = 15;

fn bpftool_json(args: &[&str]) -> Value {
    let out = Command::new("/usr/sbin/bpftool")
        .arg("-j")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run /usr/sbin/bpftool {args:?}: {e}"));
    assert!(out.status.success(), "bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?}: not JSON: {e}"))
}

/// Whether a program name from bpftool is one of ours, in full or as the kernel truncated it.
fn is_ours(name: &str) -> bool {
    MONITORS
        .iter()
        .flat_map(|m| m.programs)
        .any(|p| p.name == name || &p.name[..p.name.len().min(KERNEL_NAME_MAX)] == name)
}

/// Ids of our programs loaded right now.
fn our_program_ids() -> BTreeSet<u64> {
    bpftool_json(&["prog", "show"])
        .as_array()
        .expect("bpftool prog show: an array")
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(is_ours))
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// Ids of the links whose program is in `programs`.
fn links_of(programs: &BTreeSet<u64>) -> BTreeSet<u64> {
    bpftool_json(&["link", "show"])
        .as_array()
        .expect("bpftool link show: an array")
        .iter()
        .filter(|l| l["prog_id"].as_u64().is_some_and(|id| programs.contains(&id)))
        .filter_map(|l| l["id"].as_u64())
        .collect()
}

/// Polls until none of `programs` is loaded and no link points at one, or the bound passes;
/// returns what is left (programs, links).
fn left_after(programs: &BTreeSet<u64>, timeout: Duration) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let deadline = Instant::now() + timeout;
    loop {
        let loaded: BTreeSet<u64> = our_program_ids().intersection(programs).copied().collect();
        let links = links_of(programs);
        if (loaded.is_empty() && links.is_empty()) || Instant::now() >= deadline {
            return (loaded, links);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Which of `links` bpftool still lists.
fn links_still_listed(links: &BTreeSet<u64>) -> BTreeSet<u64> {
    bpftool_json(&["link", "show"])
        .as_array()
        .expect("bpftool link show: an array")
        .iter()
        .filter_map(|l| l["id"].as_u64())
        .filter(|id| links.contains(id))
        .collect()
}

fn all_monitors() -> String {
    MONITORS.iter().map(|m| m.name).collect::<Vec<_>>().join(",")
}

/// The pid of this test's running `tapio-load` child (tests hold the kernel lock, so there is
/// one at a time).
fn loader_pid() -> u32 {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let Some((comm, rest)) = stat.split_once(") ") else { return false };
            comm.ends_with("(tapio-load") && rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(me)
        })
        .expect("a running tapio-load child")
}

/// Ids of the programs and links `pid` holds file descriptors for, from `/proc/<pid>/fdinfo`
/// (a program fd shows `prog_id:`, a link fd `link_id:` and its program's `prog_id:`). Other
/// sessions may load the same probes at the same time: ids, not names, say which are ours.
fn held_by(pid: u32) -> (BTreeSet<u64>, BTreeSet<u64>) {
    // The attribution watcher (monitors::cgroup_watch) is no monitor: it is not planned, pinned
    // or adopted, and goes with the loader's fds; tests/attribution.rs covers it. Its program and
    // link are left out here.
    let watcher: BTreeSet<u64> = bpftool_json(&["prog", "show"])
        .as_array()
        .expect("bpftool prog show: an array")
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| cgroup_watch::SPEC.programs.iter().any(|w| w.name.starts_with(n))))
        .filter_map(|p| p["id"].as_u64())
        .collect();
    let (mut programs, mut links) = (BTreeSet::new(), BTreeSet::new());
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("read fdinfo").flatten() {
        let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let field = |key: &str| info.lines().find_map(|line| line.strip_prefix(key).and_then(|v| v.trim().parse::<u64>().ok()));
        let (prog, link) = (field("prog_id:"), field("link_id:"));
        if prog.is_some_and(|id| watcher.contains(&id)) {
            continue;
        }
        programs.extend(prog);
        links.extend(link);
    }
    (programs, links)
}

/// How many programs the loader attaches on this kernel: the planned ones, less what `plan`
/// says this kernel lacks (alternative paths of one capability count once).
fn attached_count(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.contains("attached") && l.contains("program=")).count()
}

#[test]
fn sigkill_leaves_no_program_or_link() {
    if common::skip_unless_root("sigkill_leaves_no_program_or_link") {
        return;
    }
    let _kernel = common::kernel_lock();
    let loader = common::Loader::start(&[
        "--monitors",
        &all_monitors(),
        "--metrics-address",
        "off",
        // The advanced monitor reports every read and write: keep them out of the test's pipe.
        "--output-file",
        "/dev/null",
    ]);
    let expected = attached_count(&loader.stderr.lock().unwrap());
    let (ours, links) = held_by(loader_pid());
    let named: BTreeSet<u64> = our_program_ids().intersection(&ours).copied().collect();
    assert!(expected > 0 && named.len() == expected, "expected {expected} programs of ours, the loader holds {ours:?}, bpftool names {named:?} ours");
    assert_eq!(links_of(&ours), links, "bpftool link show disagrees with the loader's link fds");
    assert_eq!(links.len(), expected, "one bpf_link per attached program");

    loader.signal(libc::SIGKILL);
    drop(loader); // reaps the child
    let (programs_left, links_left) = left_after(&ours, FREE_TIMEOUT);
    let links_left: BTreeSet<u64> = links_left.union(&links_still_listed(&links)).copied().collect();
    assert!(
        programs_left.is_empty() && links_left.is_empty(),
        "after SIGKILL, {FREE_TIMEOUT:?} later: programs {programs_left:?} and links {links_left:?} of ours remain"
    );
}

/// Removes the pins when the test ends, passed or not: a pinned program stays attached forever.
struct Pins(PathBuf);

impl Pins {
    fn unpin(&self) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_tapio-load"))
            .args(["unpin", "--pin-path"])
            .arg(&self.0)
            .output()
            .expect("run tapio-load unpin")
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = self.unpin();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A directory on bpffs unique to this run.
fn pin_dir() -> PathBuf {
    let bpffs = Path::new(tapio_runtime::pin::BPFFS);
    tapio_runtime::pin::ensure_bpffs(bpffs).unwrap_or_else(|e| panic!("{e}"));
    bpffs.join(format!("tapio-test-{}", std::process::id()))
}

/// A plain HTTP GET to the loader's metrics endpoint: status and body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect to metrics port {port}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end in {response:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line: {head}"));
    (status, body.to_owned())
}

fn exec_marker(loader: &common::Loader, marker: &str) -> Option<Value> {
    let mut seen = Vec::new();
    loader
        .wait_for(&mut seen, Duration::from_secs(10), |e| {
            e["event"] == "exec" && e["argv"].as_array().is_some_and(|a| a.iter().any(|v| v == marker))
        })
        .map(|r| r.event)
}

#[test]
fn pinned_programs_survive_restart_and_are_adopted() {
    if common::skip_unless_root("pinned_programs_survive_restart_and_are_adopted") {
        return;
    }
    let _kernel = common::kernel_lock();
    let pins = Pins(pin_dir());
    let dir = pins.0.to_str().expect("utf-8 path").to_owned();
    // Every monitor but advanced, whose flood of reads and writes would only slow the pipe:
    // tracepoints, raw tracepoints and the security monitor's alternative paths all get pinned.
    let monitors: Vec<&str> = MONITORS.iter().map(|m| m.name).filter(|&m| m != "advanced").collect();
    let monitors = monitors.join(",");
    let args = |metrics: &str| -> Vec<String> {
        ["--monitors", monitors.as_str(), "--metrics-address", metrics, "--pin-path", dir.as_str()].map(str::to_owned).to_vec()
    };
    let args_off = args("off");
    let args_off: Vec<&str> = args_off.iter().map(String::as_str).collect();

    let first = common::Loader::start(&args_off);
    let expected = attached_count(&first.stderr.lock().unwrap());
    let (ids, _) = held_by(loader_pid());
    let named: BTreeSet<u64> = our_program_ids().intersection(&ids).copied().collect();
    assert!(expected > 0 && named.len() == expected && ids == named, "expected {expected} programs of ours, the loader holds {ids:?}");
    Command::new("/bin/echo").arg("tapio-pin-first").stdout(Stdio::null()).status().expect("run echo");
    assert!(exec_marker(&first, "tapio-pin-first").is_some(), "no exec reported by the pinning loader");
    let (_, stderr, status) = first.finish();
    assert!(status.success(), "first loader failed: {stderr}");
    assert!(stderr.contains("stay attached"), "SIGTERM with --pin-path did not say the pins stay:\n{stderr}");

    // SIGTERM with pins: the programs and their links are still there, attached by the pins.
    let still: BTreeSet<u64> = our_program_ids().intersection(&ids).copied().collect();
    assert_eq!(still, ids, "programs freed despite --pin-path:\n{stderr}");
    let links = links_of(&ids);
    assert_eq!(links.len(), ids.len(), "links {links:?} for programs {ids:?}");

    // An exec while no loader runs: the ring buffer holds it for the next one.
    Command::new("/bin/echo").arg("tapio-pin-gap").stdout(Stdio::null()).status().expect("run echo");

    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let args_metrics = args(&format!("127.0.0.1:{port}"));
    let args_metrics: Vec<&str> = args_metrics.iter().map(String::as_str).collect();
    let second = common::Loader::start(&args_metrics);
    let log = second.stderr.lock().unwrap().clone();
    // The adopting loader reports the pinned programs as attached, with their unchanged ids,
    // and owes exactly those: healthy, with the real counts (the plan for this kernel agrees).
    let (status, health) = http_get(port, "/healthz");
    assert_eq!(status, 200, "/healthz of the adopting loader: {health}");
    assert_eq!(health, format!("ok: {expected} of {expected} planned programs attached\n"), "/healthz of the adopting loader");
    let (_, page) = http_get(port, "/metrics");
    let planned = page.lines().find_map(|l| l.strip_prefix("tapio_programs_planned ")).and_then(|v| v.parse::<usize>().ok());
    assert_eq!(planned, Some(expected), "tapio_programs_planned of the adopting loader:\n{page}");
    assert_eq!(common::planned_programs(&monitors), expected, "`tapio-load plan` disagrees with what the first loader attached");
    let attached = page.lines().filter(|l| l.starts_with("tapio_program_attached{") && l.contains("path=\"pinned:") && l.ends_with(" 1")).count();
    assert_eq!(attached, expected, "tapio_program_attached of the adopting loader:\n{page}");
    let reported: BTreeSet<u64> = page
        .lines()
        .filter(|l| l.starts_with("tapio_program_id{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(reported, ids, "tapio_program_id of the adopting loader:\n{page}");
    assert!(log.contains("adopted pinned monitor"), "second loader did not adopt:\n{log}");
    let (held, _) = held_by(loader_pid());
    assert!(held.is_subset(&ids), "the restart loaded new programs {:?}:\n{log}", held.difference(&ids));
    assert!(exec_marker(&second, "tapio-pin-gap").is_some(), "the exec run between the loaders was lost");
    Command::new("/bin/echo").arg("tapio-pin-after").stdout(Stdio::null()).status().expect("run echo");
    assert!(exec_marker(&second, "tapio-pin-after").is_some(), "no exec reported by the adopting loader");
    let (_, stderr, status) = second.finish();
    assert!(status.success(), "second loader failed: {stderr}");
    assert_eq!(our_program_ids().intersection(&ids).copied().collect::<BTreeSet<_>>(), ids, "adopting loader's exit freed programs");

    let out = pins.unpin();
    assert!(out.status.success(), "unpin failed: {}", String::from_utf8_lossy(&out.stderr));
    let (programs_left, links_left) = left_after(&ids, FREE_TIMEOUT);
    assert!(
        programs_left.is_empty() && links_left.is_empty(),
        "after unpin, {FREE_TIMEOUT:?} later: programs {programs_left:?} and links {links_left:?} remain"
    );
    let entries: Vec<_> = std::fs::read_dir(&pins.0).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(entries.is_empty(), "unpin left {entries:?}");
}
