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
use tapio_load::monitors::MONITORS;

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

fn all_monitors() -> String {
    MONITORS.iter().map(|m| m.name).collect::<Vec<_>>().join(",")
}

/// Our programs that appeared since `before`, polled until `count` are there (the loader
/// prints "streaming" after attaching, so this normally holds at once).
fn new_programs(before: &BTreeSet<u64>, count: usize) -> BTreeSet<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: BTreeSet<u64> = our_program_ids().difference(before).copied().collect();
        if now.len() >= count || Instant::now() >= deadline {
            return now;
        }
        thread::sleep(Duration::from_millis(20));
    }
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
    let before = our_program_ids();
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
    let ours = new_programs(&before, expected);
    assert!(expected > 0 && ours.len() >= expected, "expected {expected} programs of ours, bpftool shows {ours:?}");
    let links = links_of(&ours);
    assert!(!links.is_empty(), "no link for our programs {ours:?}: are they attached through bpf_link?");

    loader.signal(libc::SIGKILL);
    drop(loader); // reaps the child
    let (programs_left, links_left) = left_after(&ours, FREE_TIMEOUT);
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
    let bpffs = Path::new(tapio_load::pin::BPFFS);
    tapio_load::pin::ensure_bpffs(bpffs).unwrap_or_else(|e| panic!("{e}"));
    bpffs.join(format!("tapio-test-{}", std::process::id()))
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
    let args = ["--monitors", monitors.as_str(), "--metrics-address", "off", "--pin-path", dir.as_str()];

    let before = our_program_ids();
    let first = common::Loader::start(&args);
    let expected = attached_count(&first.stderr.lock().unwrap());
    let ids = new_programs(&before, expected);
    assert!(expected > 0 && ids.len() == expected, "expected {expected} new programs of ours, bpftool shows {ids:?}");
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

    let second = common::Loader::start(&args);
    let log = second.stderr.lock().unwrap().clone();
    assert!(log.contains("adopted pinned monitor"), "second loader did not adopt:\n{log}");
    assert_eq!(our_program_ids().difference(&before).copied().collect::<BTreeSet<_>>(), ids, "the restart loaded new programs:\n{log}");
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
