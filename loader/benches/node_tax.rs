//! `make bench`: what the monitors add to the node's unrelated work (issue 13, "node tax"): ns
//! added per syscall of a workload that none of them watches, for each monitor alone and for all
//! of them, each beside the baseline measured in the same run.
//!
//! Two workloads:
//! - `dd if=/dev/zero of=/dev/null bs=1 count=500000`: 1,000,000 syscalls (a read and a write per
//!   byte), the figure a platform team measures first. The advanced monitor watches read and write
//!   by default, so for it this is the cost of a watched syscall (pre-filter passed, batched).
//! - 1,000,000 `getppid` calls from this process: a syscall no monitor watches, not even the
//!   advanced monitor's default pre-filter, so for it this is the cost of a filtered-out syscall.
//!
//! Each configuration is measured as: `ROUNDS` baseline runs, `tapio-load run --monitors <m>`
//! started and streaming, `ROUNDS` attached runs, the loader stopped, `ROUNDS` baseline runs
//! again. Each run is timed by its CPU time (user + system: the BPF programs run in the syscall
//! and count as system time), not wall time, so other work on a shared machine does not count.
//! The figure is (median attached - median of both baselines) / syscalls, with the spread printed
//! beside it. Needs root; prints a SKIP line otherwise.
//!
//! Prints `BENCH node_tax.<workload>.<monitors>: <ns> ns/syscall (reference: ..., target: ...)`
//! and writes `target/bench/node_tax.json`.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde_json::json;

/// Runs of each workload per baseline and per attached phase.
const ROUNDS: usize = 7;
/// Syscalls per workload run.
const SYSCALLS: u64 = 1_000_000;
/// Every monitor, alone, then the sets issue 13 sets targets for.
const CONFIGS: &[(&str, &str)] = &[
    ("process", "<= 10 (with kernel, dns, network)"),
    ("kernel", "<= 10 (with process, dns, network)"),
    ("dns", "<= 10 (with process, kernel, network)"),
    ("network", "<= 10 (with process, kernel, dns)"),
    ("security", "<= 60 (every monitor but advanced)"),
    ("advanced", "<= 100 per filtered-out syscall (getppid)"),
    ("process,kernel,dns,network", "<= 10"),
    ("process,kernel,dns,network,security", "<= 60"),
    ("process,kernel,dns,network,security,advanced", "none"),
];

#[derive(Clone, Copy, Debug)]
enum Workload {
    Dd,
    Getppid,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::Dd => "dd",
            Self::Getppid => "getppid",
        }
    }

    /// One run's CPU time (user + system, which includes the BPF programs the syscalls run):
    /// unlike wall time, it does not count the time the workload waits for a CPU that other work
    /// on a shared machine holds.
    fn run(self) -> Result<Duration> {
        match self {
            Self::Dd => {
                let child = Command::new("dd")
                    .args(["if=/dev/zero", "of=/dev/null", "bs=1", &format!("count={}", SYSCALLS / 2)])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("run dd")?;
                let pid = child.id() as libc::pid_t;
                let mut status = 0;
                // SAFETY: rusage is plain integers, for which all zeroes is a valid value.
                let mut usage = unsafe { std::mem::zeroed::<libc::rusage>() };
                // SAFETY: reaping our own child; status and usage are valid to write. The Child
                // is not waited for again (it is dropped without wait, which does not reap).
                let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
                if r != pid {
                    bail!("wait4 dd: {}", std::io::Error::last_os_error());
                }
                if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                    bail!("dd exited with status {status:#x}");
                }
                let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
                Ok(tv(usage.ru_utime) + tv(usage.ru_stime))
            }
            Self::Getppid => {
                let started = thread_cpu();
                for _ in 0..SYSCALLS {
                    // SAFETY: getppid has no preconditions and no side effects.
                    unsafe { libc::syscall(libc::SYS_getppid) };
                }
                Ok(thread_cpu() - started)
            }
        }
    }

    fn runs(self) -> Result<Vec<f64>> {
        (0..ROUNDS).map(|_| self.run().map(|d| d.as_secs_f64())).collect()
    }
}

/// This thread's CPU time (CLOCK_THREAD_CPUTIME_ID: the scheduler's exact runtime).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A running `tapio-load run --monitors <m>`, stopped (SIGTERM) on drop.
struct Loader(Child);

impl Loader {
    fn start(monitors: &str) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tapio-load"))
            .args(["run", "--monitors", monitors])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn tapio-load")?;
        let stderr = child.stderr.take().context("tapio-load stderr")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut tx = Some(tx);
            let mut log = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("streaming events") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(()));
                    }
                } else if tx.is_some() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
            if let Some(tx) = tx {
                let _ = tx.send(Err(log));
            }
        });
        let loader = Self(child);
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(())) => Ok(loader),
            Ok(Err(log)) => bail!("tapio-load --monitors {monitors} exited before streaming:\n{log}"),
            Err(_) => bail!("tapio-load --monitors {monitors} did not start streaming within 60 s"),
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // SAFETY: signalling our own child, not yet waited for.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// One configuration on one workload.
struct Measured {
    workload: Workload,
    monitors: &'static str,
    target: &'static str,
    baseline: Vec<f64>,
    attached: Vec<f64>,
}

impl Measured {
    fn baseline_ns(&self) -> f64 {
        median(&self.baseline) * 1e9 / SYSCALLS as f64
    }

    fn added_ns(&self) -> f64 {
        (median(&self.attached) - median(&self.baseline)) * 1e9 / SYSCALLS as f64
    }

    fn spread(&self) -> String {
        let ms = |v: &[f64]| {
            let (lo, hi) = v.iter().fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            format!("{:.0}-{:.0} ms CPU", lo * 1e3, hi * 1e3)
        };
        format!("baseline {}, attached {}", ms(&self.baseline), ms(&self.attached))
    }

    fn print(&self) {
        println!(
            "BENCH node_tax.{}.{}: {:.0} ns/syscall added (reference: baseline {:.0} ns/syscall in the same run, CPU time, median of {ROUNDS} runs each, {}; target: {})",
            self.workload.name(),
            self.monitors.replace(',', "+"),
            self.added_ns(),
            self.baseline_ns(),
            self.spread(),
            self.target,
        );
    }
}

fn measure(workload: Workload, monitors: &'static str, target: &'static str) -> Result<Measured> {
    let mut baseline = workload.runs()?;
    let attached = {
        let _loader = Loader::start(monitors)?;
        // Let start-up work (map fills, the loader's first drains) settle.
        thread::sleep(Duration::from_millis(300));
        workload.runs()?
    };
    baseline.extend(workload.runs()?);
    Ok(Measured { workload, monitors, target, baseline, attached })
}

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP node_tax: needs root to load the monitors");
        return Ok(());
    }
    let mut results = Vec::new();
    for workload in [Workload::Dd, Workload::Getppid] {
        for &(monitors, target) in CONFIGS {
            let m = measure(workload, monitors, target).with_context(|| format!("node tax: {} with {monitors}", workload.name()))?;
            m.print();
            results.push(json!({
                "workload": workload.name(),
                "monitors": monitors,
                "syscalls": SYSCALLS,
                "baseline_ns_per_syscall": m.baseline_ns(),
                "added_ns_per_syscall": m.added_ns(),
                "baseline_s": m.baseline,
                "attached_s": m.attached,
                "target": target,
            }));
        }
    }
    let spawn = spawn_loop()?;
    println!(
        "BENCH node_tax.spawn_loop: {:.1} ms per {SPAWNS} spawns with the process monitor (reference: {:.1} ms with nothing attached in the same run, ratio {:.2}, median of {SPAWN_ROUNDS}, wall time)",
        spawn.attached * 1e3,
        spawn.baseline * 1e3,
        spawn.attached / spawn.baseline
    );
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join("node_tax.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json!({ "rounds": ROUNDS, "results": results }))?)
        .with_context(|| format!("write {}", path.display()))?;
    println!("node_tax: wrote {}", path.display());
    let table = node_tax_section(&results, &spawn, &dir);
    println!("{table}");
    let doc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
    splice_section(&doc, &table).with_context(|| format!("update {}", doc.display()))?;
    println!("node_tax: wrote the node-tax section of {}", doc.display());
    Ok(())
}

/// Spawns per spawn-loop run, and runs per phase.
const SPAWNS: usize = 1000;
const SPAWN_ROUNDS: usize = 3;

/// The spawn loop's wall time, nothing attached vs the process monitor (median seconds).
struct Spawn {
    baseline: f64,
    attached: f64,
}

/// `SPAWNS` sequential spawns of `/bin/true a b c` (fork, exec with argv, exit, wait): wall time,
/// since what a platform team sees is how much longer its short-lived processes take.
fn spawn_run() -> Result<f64> {
    let started = std::time::Instant::now();
    for _ in 0..SPAWNS {
        let status = Command::new("/bin/true").args(["a", "b", "c"]).status().context("spawn /bin/true")?;
        if !status.success() {
            bail!("/bin/true failed: {status}");
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

fn spawn_loop() -> Result<Spawn> {
    let mut baseline: Vec<f64> = (0..SPAWN_ROUNDS).map(|_| spawn_run()).collect::<Result<_>>()?;
    let attached: Vec<f64> = {
        let _loader = Loader::start("process")?;
        thread::sleep(Duration::from_millis(300));
        (0..SPAWN_ROUNDS).map(|_| spawn_run()).collect::<Result<_>>()?
    };
    baseline.extend((0..SPAWN_ROUNDS).map(|_| spawn_run()).collect::<Result<Vec<_>>>()?);
    Ok(Spawn { baseline: median(&baseline), attached: median(&attached) })
}

/// A figure of another bench's results file (`results.json` of kernel_cost): (value, reference).
fn figure(dir: &std::path::Path, file: &str, name: &str) -> Option<(f64, String, String)> {
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let figures = v.get("figures").and_then(|f| f.as_array()).or_else(|| v.as_array())?;
    figures.iter().find(|f| f["name"] == name).map(|f| {
        (f["value"].as_f64().unwrap_or(f64::NAN), f["reference"].as_str().unwrap_or("").to_owned(), f["unit"].as_str().unwrap_or("").to_owned())
    })
}

const BEGIN: &str = "<!-- node-tax: written by `make bench` (loader/benches/node_tax.rs) -->";
const END: &str = "<!-- /node-tax -->";

/// The node-tax section of docs/benchmarks.md: this bench's figures, and the kernel-cost and
/// delivery figures of the benches `make bench` ran before it (read from their result files).
fn node_tax_section(results: &[serde_json::Value], spawn: &Spawn, dir: &std::path::Path) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(out, "## Node tax (issue 13)\n");
    let _ = writeln!(
        out,
        "Method: `loader/benches/node_tax.rs`. Each configuration: {ROUNDS} runs of the workload with nothing attached, {ROUNDS} with \
         `tapio-load run --monitors <m>` streaming, {ROUNDS} with nothing again; each run timed by its CPU time (user + system, \
         which holds the BPF programs the syscalls run), figure = (median attached - median baseline) / {SYSCALLS} syscalls. \
         `dd` is `dd if=/dev/zero of=/dev/null bs=1` (a read and a write per byte; the advanced monitor watches both by default, \
         so for it this is a watched syscall); `getppid` is a syscall no monitor watches (for the advanced monitor, a \
         filtered-out one). Kernel figures come from `kernel_cost` (bpf_stats run time of every tapio-load program), run \
         before this bench by `make bench`.\n"
    );
    let _ = writeln!(out, "### ns added per unrelated syscall\n");
    let _ = writeln!(out, "| monitors | dd: added ns/syscall | dd baseline | getppid: added ns/syscall | getppid baseline | target |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
    let find = |w: &str, m: &str| results.iter().find(|r| r["workload"] == w && r["monitors"] == m);
    for &(monitors, target) in CONFIGS {
        let (Some(dd), Some(gp)) = (find("dd", monitors), find("getppid", monitors)) else { continue };
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().map_or("-".to_owned(), |x| format!("{x:.0}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {target} |",
            monitors.replace(',', " + "),
            f(dd, "added_ns_per_syscall"),
            f(dd, "baseline_ns_per_syscall"),
            f(gp, "added_ns_per_syscall"),
            f(gp, "baseline_ns_per_syscall"),
        );
    }
    let _ = writeln!(out, "\n### Process lifecycle, DNS, TCP\n");
    let _ = writeln!(out, "| figure | value | reference (same run) | target |");
    let _ = writeln!(out, "|---|---:|---|---|");
    let _ = writeln!(
        out,
        "| spawn loop, {SPAWNS} x `/bin/true a b c`, process monitor attached (wall) | {:.1} ms | {:.1} ms with nothing attached (ratio {:.2}) | - |",
        spawn.attached * 1e3,
        spawn.baseline * 1e3,
        spawn.attached / spawn.baseline
    );
    for (name, label, target) in [
        ("exec.tapio_exec_fork_exit", "kernel ns per fork+exec+exit (process monitor, argv included)", "<= 2000 ns"),
        ("dns.all_programs_per_pair", "kernel ns per DNS query+response pair (every program)", "<= 3000 ns"),
        ("network.per_tcp_connect", "kernel ns per TCP connect+close (every program)", "<= 3000 ns"),
    ] {
        match figure(dir, "results.json", name) {
            Some((value, reference, unit)) => {
                let _ = writeln!(out, "| {label} | {value:.0} {unit} | {reference} | {target} |");
            }
            None => {
                let _ = writeln!(out, "| {label} | not measured: kernel_cost's results.json lacks `{name}` | - | {target} |");
            }
        }
    }
    // The delivery bench's table (docs/benchmarks-delivery.md, written by `make bench` before this).
    let delivery_doc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks-delivery.md");
    let text = std::fs::read_to_string(&delivery_doc).unwrap_or_default();
    let table: Vec<&str> =
        text.lines().skip_while(|l| !l.starts_with("| transport | policy")).take_while(|l| l.starts_with('|')).collect();
    if table.is_empty() {
        let _ = writeln!(out, "\nDelivery latency: not measured (`docs/benchmarks-delivery.md` has no figures table).");
    } else {
        let _ = writeln!(
            out,
            "\n### Delivery latency, reader CPU and drops (both policies; method in docs/benchmarks-delivery.md)\n\n{}",
            table.join("\n")
        );
    }
    let _ = writeln!(out, "{END}");
    out
}

/// Replaces the node-tax section of `doc` (between its markers), or appends it.
fn splice_section(doc: &std::path::Path, section: &str) -> Result<()> {
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &text[..a], section.trim_end(), &text[b + END.len()..]),
        _ => format!("{}\n{}", text.trim_end(), section),
    };
    std::fs::write(doc, new)?;
    Ok(())
}
