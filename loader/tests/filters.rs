//! Source filters on the running kernel (issue 17 item 3): a process filtered by uid or comm in
//! the kernel produces no event while another does, and the kernel's drop counter shows it; a
//! cgroup id set (host vs container) resolved from attribution, for a cgroup present at start and
//! one made after; a reload changes a filter in place, with the same programs attached.

mod common;

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{http_get, kernel_lock, sample, skip_unless_root, Loader};
use common::cgroups::{exec_in, v2_root, Cgroups};
use serde_json::Value;

/// A copy of /bin/echo named `name`, so its exec's comm is `name`.
fn echo_named(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy("/bin/echo", &path).expect("copy /bin/echo");
    path
}

fn run(path: &Path, marker: &str) {
    let status = Command::new(path).arg(marker).stdout(Stdio::null()).status().expect("run the echo copy");
    assert!(status.success());
}

fn execs_with(events: &[Value], marker: &str) -> usize {
    events.iter().filter(|e| e["event"] == "exec" && e["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == marker))).count()
}

fn kernel_drops(page: &str, filter: &str, monitor: &str) -> f64 {
    sample(page, &format!("tapio_filter_dropped_total{{filter=\"{filter}\",where=\"kernel\",monitor=\"{monitor}\"}}")).unwrap_or(0.0)
}

fn agent_drops(page: &str, filter: &str) -> f64 {
    sample(page, &format!("tapio_filter_dropped_total{{filter=\"{filter}\",where=\"agent\"}}")).unwrap_or(0.0)
}

/// Polls /metrics until `pred` holds (10 s), returning the last page.
fn metrics_until(port: u16, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = http_get(port, "/metrics");
        if pred(&page) || Instant::now() > deadline {
            return page;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config_file(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("tapio.toml");
    std::fs::write(&file, text).expect("write the configuration");
    file
}

/// Both builds: the ring build's switch is a `const volatile`, the perf build reads the flags
/// word from the map (no global data there).
#[rstest::rstest]
#[case::ringbuf("ringbuf")]
#[case::perf("perf")]
fn uid_and_comm_are_filtered_in_the_kernel(#[case] transport: &str) {
    if skip_unless_root("uid_and_comm_are_filtered_in_the_kernel") {
        return;
    }
    let _kernel = kernel_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let nonce = std::process::id();
    let file = config_file(
        dir.path(),
        &format!("monitors = [\"process\"]\nmetrics_address = \"127.0.0.1:{port}\"\nfilter_exclude_comms = [\"tapflt-drop\"]\nfilter_exclude_uids = [4242]\n"),
    );
    let dropped = echo_named(dir.path(), "tapflt-drop");
    let kept = echo_named(dir.path(), "tapflt-keep");
    // Readable and executable by uid 4242.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod the directory");
    let loader = Loader::start(&["--config", file.to_str().expect("utf-8 path"), "--transport", transport]);

    run(&dropped, &format!("comm-{nonce}"));
    let status = Command::new(&kept).arg(format!("uid-{nonce}")).uid(4242).gid(4242).stdout(Stdio::null()).status().expect("run as uid 4242");
    assert!(status.success());
    run(&kept, &format!("kept-{nonce}"));

    let mut seen = Vec::new();
    loader
        .wait_for(&mut seen, Duration::from_secs(10), |e| execs_with(std::slice::from_ref(e), &format!("kept-{nonce}")) == 1)
        .unwrap_or_else(|| panic!("the unfiltered exec never came; saw {} events", seen.len()));
    let page = metrics_until(port, |p| kernel_drops(p, "comm", "process") >= 1.0 && kernel_drops(p, "uid", "process") >= 1.0);
    let (events, stderr, status) = loader.finish();
    seen.extend(events);
    assert!(status.success(), "tapio-load exits 0: {status}; stderr:\n{stderr}");
    assert_eq!(execs_with(&seen, &format!("comm-{nonce}")), 0, "the excluded comm's exec was output");
    assert_eq!(execs_with(&seen, &format!("uid-{nonce}")), 0, "the excluded uid's exec was output");
    assert!(seen.iter().all(|e| e["comm"] != "tapflt-drop" && e["uid"] != 4242), "an event of a filtered process was output");
    // Dropped before the buffer: counted by the kernel, never seen by the agent.
    assert!(kernel_drops(&page, "comm", "process") >= 1.0, "{page}");
    assert!(kernel_drops(&page, "uid", "process") >= 1.0, "{page}");
    assert_eq!(agent_drops(&page, "comm"), 0.0, "{page}");
    assert_eq!(agent_drops(&page, "uid"), 0.0, "{page}");
}

/// `filter_scope = "host"`: the container cgroups the agent knows become the kernel's exclude
/// set, one found by the scan at start and one announced by the watcher after.
#[test]
fn host_scope_excludes_container_cgroups_in_the_kernel() {
    if skip_unless_root("host_scope_excludes_container_cgroups_in_the_kernel") {
        return;
    }
    let _kernel = kernel_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let nonce = std::process::id();
    let root = v2_root();
    let id = |n: u32| format!("{nonce:08x}{n:04x}{}", "feed".repeat(13))[..64].to_owned();
    let uid = format!("{nonce:08x}-1111-4222-8333-444455556666");
    let pod = format!("kubepods/burstable/pod{uid}");
    let mut cgroups = Cgroups::default();
    let early = cgroups.make(&root, &format!("{pod}/{}", id(1)));
    let file = config_file(dir.path(), &format!("monitors = [\"process\"]\nmetrics_address = \"127.0.0.1:{port}\"\nfilter_scope = \"host\"\n"));
    let loader = Loader::start(&["--config", file.to_str().expect("utf-8 path")]);

    exec_in(&early, &format!("early-{nonce}"));
    let page = metrics_until(port, |p| kernel_drops(p, "cgroup", "process") >= 1.0);
    let at_start = kernel_drops(&page, "cgroup", "process");
    assert!(at_start >= 1.0, "the scanned container cgroup was not dropped in the kernel:\n{page}");

    // Made after the start: the watcher announces it, the agent adds it to the kernel's set.
    let late = cgroups.make(&root, &format!("{pod}/{}", id(2)));
    std::thread::sleep(Duration::from_millis(500));
    exec_in(&late, &format!("late-{nonce}"));
    exec_in(&root, &format!("host-{nonce}"));
    let page = metrics_until(port, |p| kernel_drops(p, "cgroup", "process") > at_start);
    let (events, stderr, status) = loader.finish();
    assert!(status.success(), "tapio-load exits 0: {status}; stderr:\n{stderr}");
    assert!(kernel_drops(&page, "cgroup", "process") > at_start, "the announced cgroup was not dropped in the kernel:\n{page}");
    assert_eq!(execs_with(&events, &format!("early-{nonce}")), 0);
    assert_eq!(execs_with(&events, &format!("late-{nonce}")), 0);
    assert_eq!(execs_with(&events, &format!("host-{nonce}")), 1, "the host exec must pass");
    assert!(events.iter().all(|e| e.get("container_id").is_none()), "a container event was output");
}

fn program_ids(page: &str) -> Vec<String> {
    let mut ids: Vec<String> = page.lines().filter(|l| l.starts_with("tapio_program_id{")).map(str::to_owned).collect();
    ids.sort();
    ids
}

/// Our programs' attachments (tracepoints attach through perf events, raw tracepoints through
/// an fd): (pid, fd, prog_id) from `bpftool perf show`, for the program ids on the metrics page.
fn attachments(page: &str) -> Vec<(u64, u64, u64)> {
    let ids: Vec<u64> = program_ids(page).iter().filter_map(|l| l.rsplit(' ').next()?.parse().ok()).collect();
    let out = Command::new("bpftool").args(["-j", "perf", "show"]).output().expect("run bpftool");
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut found: Vec<(u64, u64, u64)> = all
        .iter()
        .filter_map(|a| Some((a["pid"].as_u64()?, a["fd"].as_u64()?, a["prog_id"].as_u64()?)))
        .filter(|(_, _, prog)| ids.contains(prog))
        .collect();
    found.sort();
    found
}

/// Rewriting the file swaps the excluded comm in the kernel's map: the old one passes again, the
/// new one is dropped, and every program keeps its id (nothing detached or reloaded).
#[test]
fn a_reload_changes_a_kernel_filter_in_place() {
    if skip_unless_root("a_reload_changes_a_kernel_filter_in_place") {
        return;
    }
    let _kernel = kernel_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let nonce = std::process::id();
    let config = |comm: &str| format!("monitors = [\"process\"]\nmetrics_address = \"127.0.0.1:{port}\"\nfilter_exclude_comms = [\"{comm}\"]\n");
    let file = config_file(dir.path(), &config("tapflt-a"));
    let a = echo_named(dir.path(), "tapflt-a");
    let b = echo_named(dir.path(), "tapflt-b");
    let loader = Loader::start(&["--config", file.to_str().expect("utf-8 path")]);
    let (_, before) = http_get(port, "/metrics");
    assert!(!program_ids(&before).is_empty(), "{before}");
    let attachments_before = attachments(&before);
    assert!(!attachments_before.is_empty(), "no perf attachment of our programs in `bpftool perf show`");

    run(&a, &format!("a1-{nonce}"));
    run(&b, &format!("b1-{nonce}"));
    let mut seen = Vec::new();
    loader
        .wait_for(&mut seen, Duration::from_secs(10), |e| execs_with(std::slice::from_ref(e), &format!("b1-{nonce}")) == 1)
        .unwrap_or_else(|| panic!("no exec of b before the reload"));

    std::fs::write(&file, config("tapflt-b")).expect("rewrite the configuration");
    let after = metrics_until(port, |p| sample(p, "tapio_config_reloads_total").unwrap_or(0.0) >= 1.0);
    assert_eq!(sample(&after, "tapio_config_reloads_total"), Some(1.0), "the rewrite was not applied:\n{after}");
    assert_eq!(program_ids(&before), program_ids(&after), "program ids changed across the reload");
    // The maps are rewritten after the pass that saw the reload: give it one drain.
    std::thread::sleep(Duration::from_millis(200));
    run(&a, &format!("a2-{nonce}"));
    run(&b, &format!("b2-{nonce}"));
    loader
        .wait_for(&mut seen, Duration::from_secs(10), |e| execs_with(std::slice::from_ref(e), &format!("a2-{nonce}")) == 1)
        .unwrap_or_else(|| panic!("the comm no longer excluded did not pass after the reload"));
    let page = metrics_until(port, |p| kernel_drops(p, "comm", "process") >= 2.0);
    let attachments_after = attachments(&page);
    let (events, stderr, status) = loader.finish();
    seen.extend(events);
    assert!(status.success(), "tapio-load exits 0: {status}; stderr:\n{stderr}");
    assert_eq!(execs_with(&seen, &format!("a1-{nonce}")), 0, "excluded before the reload");
    assert_eq!(execs_with(&seen, &format!("b2-{nonce}")), 0, "excluded after the reload");
    assert!(kernel_drops(&page, "comm", "process") >= 2.0, "{page}");
    assert_eq!(agent_drops(&page, "comm"), 0.0, "the kernel, not the agent, dropped them:\n{page}");
    assert_eq!(attachments_before, attachments_after, "the programs' attachments changed across the reload");
}

/// A binary path prefix is judged by the agent on exec events, and counted there.
#[test]
fn a_binary_prefix_is_filtered_in_the_agent() {
    if skip_unless_root("a_binary_prefix_is_filtered_in_the_agent") {
        return;
    }
    let _kernel = kernel_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let nonce = std::process::id();
    let skipped = dir.path().join("skipped");
    std::fs::create_dir(&skipped).expect("mkdir");
    let file = config_file(
        dir.path(),
        &format!("monitors = [\"process\"]\nmetrics_address = \"127.0.0.1:{port}\"\nfilter_exclude_binaries = [\"{}/*\"]\n", skipped.display()),
    );
    let dropped = echo_named(&skipped, "tapflt-bin");
    let kept = echo_named(dir.path(), "tapflt-bin");
    let loader = Loader::start(&["--config", file.to_str().expect("utf-8 path")]);
    run(&dropped, &format!("bin-drop-{nonce}"));
    run(&kept, &format!("bin-keep-{nonce}"));
    let mut seen = Vec::new();
    loader
        .wait_for(&mut seen, Duration::from_secs(10), |e| execs_with(std::slice::from_ref(e), &format!("bin-keep-{nonce}")) == 1)
        .unwrap_or_else(|| panic!("the exec outside the prefix never came"));
    let page = metrics_until(port, |p| agent_drops(p, "binary") >= 1.0);
    let (events, stderr, status) = loader.finish();
    seen.extend(events);
    assert!(status.success(), "tapio-load exits 0: {status}; stderr:\n{stderr}");
    assert_eq!(execs_with(&seen, &format!("bin-drop-{nonce}")), 0, "the exec under the excluded prefix was output");
    assert_eq!(agent_drops(&page, "binary"), 1.0, "{page}");
}
