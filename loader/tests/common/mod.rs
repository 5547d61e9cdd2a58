//! Shared pieces of the real-kernel tests: a running `tapio-load` whose events can be awaited.

#![allow(dead_code, reason = "each test file uses a different part of this module")]

pub mod cgroups;
pub mod dnsmasq;
pub mod dns_wire;
pub mod skip;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Tests that load programs and then count what is loaded must not overlap: hold this.
pub static KERNEL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`KERNEL`], surviving a poisoned lock from a failed test.
pub fn kernel_lock() -> std::sync::MutexGuard<'static, ()> {
    KERNEL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Skips (returns true, reported by [`skip::skip`]) when not root: these tests load into the
/// running kernel. Under `make test` that is a failure, not a skip.
pub fn skip_unless_root(test: &str) -> bool {
    skip::unless_root(test, "CAP_BPF and CAP_PERFMON to load BPF programs")
}

/// Reports a skip for want of `needs` (kernel features, tapio_kernel_gates names): listed with
/// the kernel's explanation, or a failure when the running kernel should have them and nothing
/// (its version, its config, a probe refused as root) explains why it has not.
pub fn skip_for_kernel(test: &str, needs: &tapio_kernel_gates::Needs, reason: impl Into<String>) {
    skip::skip(test, skip::Why::kernel(reason, needs, &tapio_features::features::kernel_facts()));
}

/// What `name` (a program or a capability the loader may report unavailable) of `monitor` needs.
pub fn needs_of(monitor: &str, name: &str) -> tapio_kernel_gates::Needs {
    tapio_runtime::monitors::needs_of(tapio_runtime::monitors::monitor(monitor).expect("a monitor"), name)
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An event line and the monotonic time it was read.
pub struct Received {
    pub event: Value,
    pub read_ns: u64,
}

/// A `tapio-load run` child, started and attached.
pub struct Loader {
    child: Option<Child>,
    rx: mpsc::Receiver<Received>,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Loader {
    /// Starts `tapio-load run` with `args` and returns once it says it is streaming.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tapio-load"))
            .arg("run")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tapio-load");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let read_ns = monotonic_ns();
                let event: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                if tx.send(Received { event, read_ns }).is_err() {
                    break;
                }
            }
        });
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let log2 = log.clone();
        thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("streaming events") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut loader = Self { child: Some(child), rx, stderr: log };
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let out = loader.stop();
            panic!("tapio-load did not start streaming; stderr:\n{out}");
        }
        loader
    }

    /// Waits up to `timeout` for an event matching `pred`; other events are kept in `seen`.
    pub fn wait_for(
        &self,
        seen: &mut Vec<Value>,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let r = self.rx.recv_timeout(left).ok()?;
            seen.push(r.event.clone());
            if pred(&r.event) {
                return Some(r);
            }
        }
    }

    /// Sends `signal` to the running loader (SIGHUP to reload its configuration).
    pub fn signal(&self, signal: i32) {
        let child = self.child.as_ref().expect("running");
        // SAFETY: signalling our own child, which has not been waited for.
        unsafe { libc::kill(child.id() as i32, signal) };
    }

    /// Sends SIGTERM, waits for exit, returns every event still buffered and stderr.
    pub fn finish(mut self) -> (Vec<Value>, String, std::process::ExitStatus) {
        let mut child = self.child.take().expect("running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().expect("wait tapio-load");
        let events: Vec<Value> = self.rx.try_iter().map(|r| r.event).collect();
        // The reader threads end at EOF; give stderr's thread its last lines.
        let events = {
            let mut all = events;
            while let Ok(r) = self.rx.recv_timeout(Duration::from_secs(2)) {
                all.push(r.event);
            }
            all
        };
        let stderr = self.stderr.lock().unwrap().clone();
        (events, stderr, status)
    }

    fn stop(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Names of BPF programs currently loaded in the kernel, from `bpftool prog show`.
pub fn loaded_program_names() -> Vec<String> {
    let bpftool = ["bpftool", "/usr/sbin/bpftool"]
        .into_iter()
        .find(|b| Command::new(b).arg("version").output().is_ok())
        .expect("bpftool installed (ci/setup.sh)");
    let out = Command::new(bpftool).args(["-j", "prog", "show"]).output().expect("bpftool prog show");
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    v.as_array().map(|a| a.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// Programs named `prefix*` still loaded once the kernel has had `timeout` to free them.
///
/// Closing the last fd of a program frees it after an RCU grace period, asynchronously; there is
/// no event to wait on, so this polls the condition itself until it holds or time runs out.
pub fn programs_left_after(prefix: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<String> = loaded_program_names().into_iter().filter(|n| n.starts_with(prefix)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A port free right now (bound then released; the loader binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local addr").port()
}

/// A plain HTTP GET to the loader's metrics endpoint, answered within `timeout`: status and body,
/// or None when no answer came in time.
pub fn http_get_within(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// [`http_get_within`] 10 s, panicking without an answer.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_get_within(port, path, Duration::from_secs(10)).unwrap_or_else(|| panic!("GET {path} on port {port}: no answer in 10 s"))
}

/// The value of the first sample whose name and labels start with `prefix`.
pub fn sample(page: &str, prefix: &str) -> Option<f64> {
    page.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

/// How many programs `tapio-load plan` says attach on this kernel for `monitors`: the count
/// `/healthz` and `tapio_programs_planned` must agree with, from an independent source.
pub fn planned_programs(monitors: &str) -> usize {
    let out = Command::new(env!("CARGO_BIN_EXE_tapio-load"))
        .args(["plan", "--json", "--monitors", monitors])
        .output()
        .expect("run tapio-load plan");
    assert!(out.status.success(), "plan: {}", String::from_utf8_lossy(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan --json");
    plan["programs"].as_array().expect("programs").iter().filter(|p| p.get("path").is_some()).count()
}

/// A BTF file with only the types the process monitor's CO-RE relocations need
/// (`tapio-load btf minimize` for process.bpf.o): the process monitor relocates against it, every
/// other monitor's relocations find nothing, and the verifier rejects their programs. A real
/// way for one monitor to fail to load while another runs.
pub fn process_only_btf(dir: &std::path::Path) -> std::path::PathBuf {
    let full = std::fs::read("/sys/kernel/btf/vmlinux").expect("read /sys/kernel/btf/vmlinux");
    let object = tapio_bundle::object("process", tapio_bundle::Transport::Ringbuf).expect("process object");
    let inputs = [tapio_object::btf_minimize::ObjectInput { file: object.file, bytes: object.bytes }];
    let m = tapio_object::btf_minimize::minimize(&full, &inputs).expect("minimize BTF for the process monitor");
    let path = dir.join("process-only.btf");
    std::fs::write(&path, &m.bytes).expect("write BTF");
    path
}

/// Makes `in_container` relative to this test process's mount namespace when the suite runs
/// outside the initial one (../shared/fresh-ci runs it in a private mount namespace, and refuses
/// pid 1's namespace file, so the initial one cannot be joined). There every process of the
/// suite is rightly `in_container: true`; the tests ask whether a process left *our* namespace,
/// so each event's value is recomputed from its own `mnt_ns`. In the initial namespace (a normal
/// CI run) this does nothing and the kernel's own values are checked.
pub fn relative_in_container(events: &mut [Value]) {
    use std::os::unix::fs::MetadataExt;
    // The initial mount namespace's inode: fixed on 6.18+ (MNT_NS_INIT_INO), else pid 1's.
    const MNT_NS_INIT_INO: u64 = 0xEFFF_FFF8;
    let Ok(own) = std::fs::metadata("/proc/self/ns/mnt").map(|m| m.ino()) else { return };
    let initial = std::fs::metadata("/proc/1/ns/mnt").map(|m| m.ino()).unwrap_or(MNT_NS_INIT_INO);
    if own == initial {
        return;
    }
    for e in events.iter_mut() {
        if let (Some(ns), true) = (e["mnt_ns"].as_u64(), e.get("in_container").is_some()) {
            e["in_container"] = Value::Bool(ns != own);
        }
    }
}
