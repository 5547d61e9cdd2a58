//! `make bench`: the verifier matrix's wall time per kernel beside the bare boot of the same
//! kernel to a trivial init (issue 9 item 7; target: at most 2x).
//!
//! For every default line of `vm-images/kernels.lock` whose kernel is already in the cache (a
//! line that is not cached is skipped and said so: a benchmark does not download kernels), the
//! same initramfs the matrix packs (`matrix::pack`) is booted twice with the same QEMU
//! configuration and the accelerator the matrix would choose (`runner::detect_accel`):
//!
//! - bare: with `tapio.bare` on the kernel command line the guest agent mounts what it always
//!   mounts, writes its `done` line and powers off (verifier-matrix/guest/src/main.rs), so the
//!   figure is kernel boot + unpacking the same initramfs + QEMU start and exit;
//! - full: the agent as the matrix runs it, every monitor loaded, every check run.
//!
//! Boots run one at a time (never two QEMUs competing for the CPUs), bare then full per kernel,
//! and with `TAPIO_BENCH_ROUNDS=N` (default 1) N rounds alternating which goes first; each
//! figure is then the median. The wall time is `runner::GuestOutcome::wall`: QEMU spawn to exit,
//! what the matrix reports as a row's wall time.
//!
//! Prints `BENCH <name>: <value> <unit> (reference: ..., target: ...)` lines and writes
//! `target/bench/matrix.json` and `docs/benchmarks-matrix.md`.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use verifier_matrix::{
    arch::ArchExt as _,
    artifacts::fetch::{self, KernelArtifacts},
    kernels::manifest::Lock,
    matrix,
    report::{judge::judge, results, Verdict},
    vm::{
        console,
        qemu::{Accel, QemuConfig},
        runner::{self, GuestOutcome, GuestStatus},
    },
};

/// The kernel command-line word that makes the guest agent stop right after mounting.
const BARE: &str = "tapio.bare";
/// Wall-clock limit per boot: the matrix's default (`--timeout 180`).
const TIMEOUT: Duration = Duration::from_secs(180);
/// The target: full matrix boot at most this many times the bare boot.
const TARGET_RATIO: f64 = 2.0;

/// One boot's measurements.
#[derive(Debug, Clone)]
struct Boot {
    wall_s: f64,
    /// Guest clock (printk timestamp) when the kernel ran `/init`.
    init_at_s: Option<f64>,
    /// Guest clock of the last console line (power-off).
    end_at_s: Option<f64>,
    /// Summed `load_us` of the agent's verifier lines: time inside BPF_PROG_LOAD.
    verifier_load_s: f64,
    /// The matrix's verdict for a full boot; for a bare boot, whether it powered off with `done`.
    verdict: String,
}

/// One kernel's figures (medians over the rounds).
struct KernelFigures {
    line: String,
    release: String,
    bare: Vec<Boot>,
    full: Vec<Boot>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

impl KernelFigures {
    fn bare_s(&self) -> f64 {
        median(self.bare.iter().map(|b| b.wall_s).collect())
    }
    fn full_s(&self) -> f64 {
        median(self.full.iter().map(|b| b.wall_s).collect())
    }
    fn ratio(&self) -> f64 {
        self.full_s() / self.bare_s()
    }
    /// The full boot whose wall time is the median, for the breakdown.
    fn median_full(&self) -> &Boot {
        let m = self.full_s();
        self.full.iter().find(|b| b.wall_s == m).unwrap_or(&self.full[0])
    }
    fn median_bare(&self) -> &Boot {
        let m = self.bare_s();
        self.bare.iter().find(|b| b.wall_s == m).unwrap_or(&self.bare[0])
    }
}

fn main() -> Result<()> {
    let workspace = workspace_root();
    let rounds: usize = match std::env::var("TAPIO_BENCH_ROUNDS") {
        Ok(v) => v.parse().with_context(|| format!("TAPIO_BENCH_ROUNDS={v}: not a number"))?,
        Err(_) => 1,
    };
    let rounds = rounds.max(1);
    let lock_path = workspace.join("vm-images/kernels.lock");
    let lock = Lock::load(&lock_path).with_context(|| format!("read {}", lock_path.display()))?;
    let cache = fetch::kernel_cache_dir().context("kernel cache directory")?;

    // Cached default lines only; everything else is said and skipped.
    let mut kernels: Vec<(String, verifier_matrix::arch::Arch, KernelArtifacts)> = Vec::new();
    let mut skipped = Vec::new();
    for k in lock.kernels.iter().filter(|k| k.default) {
        if let Some(reason) = k.unavailable_reason() {
            println!("SKIP matrix.{}: unavailable: {reason}", k.line);
            skipped.push(format!("{}: unavailable ({reason})", k.line));
            continue;
        }
        // No mirror: a cache hit needs none, and a miss fails instead of downloading.
        match fetch::ensure_kernel(k, "", &cache) {
            Ok(a) => kernels.push((k.id(), k.arch, a)),
            Err(e) => {
                println!("SKIP matrix.{}: not in the kernel cache {} ({e}); `cargo xtask verifier-matrix` fetches it", k.line, cache.display());
                skipped.push(format!("{}: not cached", k.line));
            }
        }
    }
    if kernels.is_empty() {
        println!("SKIP matrix_overhead: no default kernel is cached in {}", cache.display());
        return Ok(());
    }

    // One agent per architecture among the kernels (arm64 rows boot an arm64 agent).
    let mut guests = std::collections::BTreeMap::new();
    for arch in kernels.iter().map(|(_, arch, _)| *arch) {
        if let std::collections::btree_map::Entry::Vacant(slot) = guests.entry(arch) {
            println!("matrix_overhead: building the guest agent ({arch})");
            slot.insert(verifier_matrix::artifacts::guest::build(&workspace, arch).context("build the guest agent")?);
        }
    }
    let work = target_dir().join("bench/matrix");
    fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;

    let mut accel: Option<Accel> = None;
    let mut figures = Vec::new();
    for (line, arch, artifacts) in &kernels {
        let guest = &guests[arch];
        let dir = work.join(line.replace(['/', ':'], "_"));
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let initrd = dir.join("initramfs.cpio");
        matrix::pack(guest, *arch, artifacts, &initrd)?;
        // KVM (if any) runs only the host's architecture; another one is emulated, as in the matrix.
        let a = if arch.kvm_possible() { *accel.get_or_insert_with(|| runner::detect_accel(&artifacts.vmlinuz, &initrd)) } else { Accel::Tcg };
        let mut k = KernelFigures { line: line.clone(), release: artifacts.release.clone(), bare: vec![], full: vec![] };
        for round in 0..rounds {
            // Alternate the order so neither kind always runs on a warmer page cache.
            let order: [bool; 2] = if round % 2 == 0 { [true, false] } else { [false, true] };
            for bare in order {
                let b = boot(*arch, artifacts, &initrd, &dir, a, bare)?;
                println!(
                    "matrix_overhead: {line} round {} {}: {:.2} s ({})",
                    round + 1,
                    if bare { "bare" } else { "full" },
                    b.wall_s,
                    b.verdict
                );
                if bare { k.bare.push(b) } else { k.full.push(b) }
            }
        }
        for f in kernel_figures(&k, a) {
            println!("{f}");
        }
        figures.push(k);
    }
    let accel = accel.unwrap_or(Accel::Tcg);
    write_reports(&workspace, &figures, &skipped, accel, rounds)
}

/// Boots `initrd` on the kernel once, bare or full, and measures it.
fn boot(arch: verifier_matrix::arch::Arch, artifacts: &KernelArtifacts, initrd: &Path, dir: &Path, accel: Accel, bare: bool) -> Result<Boot> {
    let kind = if bare { "bare" } else { "full" };
    let mut cfg = QemuConfig::new(
        &artifacts.vmlinuz,
        initrd,
        accel,
        dir.join(format!("console-{kind}.log")),
        dir.join(format!("results-{kind}.jsonl")),
    );
    cfg.arch = arch;
    if bare {
        cfg.append_extra.push(BARE.to_owned());
    }
    let o = runner::run_guest(&cfg, TIMEOUT, |_| {})
        .with_context(|| format!("{}: {kind} boot", artifacts.release))?;
    if o.status != GuestStatus::PoweredOff {
        bail!(
            "{}: {kind} boot ended {:?} after {:.1} s, not by power-off; console tail:\n{}",
            artifacts.release,
            o.status,
            o.wall.as_secs_f64(),
            o.console_tail(20)
        );
    }
    let lines = o.results_lines();
    let mut parsed = results::parse(&lines);
    // The kernel's config, as the matrix gives its judge (skips are judged against it).
    parsed.set_config(matrix::guest_config(artifacts));
    parsed.set_arch(arch);
    let verdict = if bare {
        if !parsed.done {
            bail!("{}: bare boot powered off without its done line (is the guest agent built with tapio.bare?)", artifacts.release);
        }
        if parsed.programs.is_empty() && parsed.verifier.is_empty() {
            "powered off after mounting, nothing loaded".to_owned()
        } else {
            bail!("{}: bare boot loaded programs: the guest ignored {BARE}", artifacts.release);
        }
    } else {
        match judge(&parsed, &o.splats) {
            Verdict::Pass => "matrix verdict pass".to_owned(),
            other => format!("matrix verdict {} (timed all the same)", other.label()),
        }
    };
    let verifier_load_s = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "verifier")
        .filter_map(|v| v["load_us"].as_u64())
        .sum::<u64>() as f64
        / 1e6;
    let (init_at_s, end_at_s) = guest_clock(&o);
    Ok(Boot { wall_s: o.wall.as_secs_f64(), init_at_s, end_at_s, verifier_load_s, verdict })
}

/// The printk timestamps of `Run /init as init process` and of the console's last stamped line.
fn guest_clock(o: &GuestOutcome) -> (Option<f64>, Option<f64>) {
    let stamp = |line: &str| -> Option<f64> {
        let rest = line.trim_start().strip_prefix('[')?;
        rest[..rest.find(']')?].trim().parse().ok()
    };
    let init = o
        .console
        .lines()
        .find(|l| console::strip_timestamp(l).starts_with("Run /init as init process"))
        .and_then(stamp);
    let end = o.console.lines().rev().find_map(stamp);
    (init, end)
}

/// The printed and stored figures of one kernel.
fn kernel_figures(k: &KernelFigures, accel: Accel) -> Vec<String> {
    let (bare, full, ratio) = (k.bare_s(), k.full_s(), k.ratio());
    let n = k.full.len();
    let of = if n > 1 { format!(", median of {n}") } else { String::new() };
    vec![
        format!(
            "BENCH matrix.{}.bare_boot: {bare:.2} s (reference: kernel {} to the agent's done line, {accel}{of}, target: reference only)",
            k.line, k.release
        ),
        format!(
            "BENCH matrix.{}.full_boot: {full:.2} s (reference: bare boot {bare:.2} s in this run, target: <= {:.2} s (2x bare))",
            k.line,
            bare * TARGET_RATIO
        ),
        format!(
            "BENCH matrix.{}.ratio: {ratio:.2} x (reference: bare {bare:.2} s, full {full:.2} s in this run, target: <= 2x){}",
            k.line,
            if ratio <= TARGET_RATIO { "" } else { " MISSED" }
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Report.

fn write_reports(workspace: &Path, figures: &[KernelFigures], skipped: &[String], accel: Accel, rounds: usize) -> Result<()> {
    let detection = runner::accel_detection().map(|d| d.reason.clone()).unwrap_or_default();
    let rows: Vec<Value> = figures
        .iter()
        .map(|k| {
            let f = k.median_full();
            let b = k.median_bare();
            json!({
                "line": k.line,
                "release": k.release,
                "bare_s": k.bare_s(),
                "full_s": k.full_s(),
                "ratio": k.ratio(),
                "target_ratio": TARGET_RATIO,
                "met": k.ratio() <= TARGET_RATIO,
                "bare_runs_s": k.bare.iter().map(|b| b.wall_s).collect::<Vec<_>>(),
                "full_runs_s": k.full.iter().map(|b| b.wall_s).collect::<Vec<_>>(),
                "bare_guest_init_at_s": b.init_at_s,
                "bare_guest_end_at_s": b.end_at_s,
                "full_guest_init_at_s": f.init_at_s,
                "full_guest_end_at_s": f.end_at_s,
                "full_verifier_load_s": f.verifier_load_s,
                "full_verdict": f.verdict,
            })
        })
        .collect();
    let results = json!({
        "date": now_utc(),
        "machine": machine(),
        "accel": accel.as_str(),
        "accel_reason": detection,
        "rounds": rounds,
        "kernels": rows,
        "skipped": skipped,
    });
    let bench_dir = target_dir().join("bench");
    fs::create_dir_all(&bench_dir).with_context(|| format!("create {}", bench_dir.display()))?;
    let json_path = bench_dir.join("matrix.json");
    fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n").with_context(|| format!("write {}", json_path.display()))?;
    let doc = workspace.join("docs/benchmarks-matrix.md");
    fs::write(&doc, markdown(&results, figures, skipped, accel)).with_context(|| format!("write {}", doc.display()))?;
    println!("matrix_overhead: wrote {} and {}", doc.display(), json_path.display());
    Ok(())
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.2}"))
}

fn markdown(results: &Value, figures: &[KernelFigures], skipped: &[String], accel: Accel) -> String {
    let m = &results["machine"];
    let mut s = String::new();
    let _ = writeln!(s, "# Verifier matrix overhead benchmark\n");
    let _ = writeln!(
        s,
        "Written by `make bench` (`verifier-matrix/benches/matrix_overhead.rs`); do not edit by hand. \
         The same figures are in `target/bench/matrix.json`.\n"
    );
    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "- date: {}", results["date"].as_str().unwrap_or(""));
    let _ = writeln!(s, "- kernel: {}", m["kernel"].as_str().unwrap_or(""));
    let _ = writeln!(s, "- CPUs (`nproc`): {}", m["nproc"].as_str().unwrap_or(""));
    let _ = writeln!(s, "- CPU: {}", m["cpu"].as_str().unwrap_or(""));
    let _ = writeln!(s, "- load average at the end (other work on the machine): {}", m["loadavg_at_end"].as_str().unwrap_or(""));
    let _ = writeln!(s, "- accelerator: {accel} ({})\n", results["accel_reason"].as_str().unwrap_or(""));
    let _ = writeln!(s, "## Method\n");
    let _ = writeln!(
        s,
        "- Kernels: the default lines of `vm-images/kernels.lock` already in the kernel cache; \
         a line not cached is skipped and listed below (the benchmark never downloads).\n\
         - One initramfs per kernel, packed by `matrix::pack` exactly as the matrix packs it (the \
         static musl guest agent as `/init`, `/dev/console`, the kernel config).\n\
         - Bare boot: the same kernel, initramfs and QEMU configuration (`QemuConfig::new`: \
         2 vCPUs, 1 GiB, the matrix's command line) plus `{BARE}`: the agent mounts proc, sysfs, \
         devtmpfs, tracefs, debugfs, bpffs and cgroup2, brings `lo` up, writes `done` and powers \
         off. That is the trivial init: what remains is QEMU start, kernel boot, unpacking the \
         same initramfs and power-off.\n\
         - Full boot: the agent as `cargo xtask verifier-matrix` runs it (every monitor loaded \
         and attached, every check and scenario), judged with the matrix's own `report::judge`.\n\
         - Wall time: `runner::run_guest`'s `wall`, QEMU spawn to exit, the figure the matrix \
         reports per row. Boots run one at a time, bare then full for each kernel ({} round(s); \
         `TAPIO_BENCH_ROUNDS=N` runs N, alternating the order, and reports medians). The matrix \
         itself boots kernels in parallel (`--jobs`, default the core count), so its total run \
         time is not the sum of these rows.\n\
         - Breakdown columns come from the guest's own clock (printk timestamps of `Run /init as \
         init process` and of the power-off line) and from the agent's `load_us` per program \
         (time inside `BPF_PROG_LOAD`, i.e. the verifier and JIT).\n",
        results["rounds"]
    );
    let _ = writeln!(s, "## Figures\n");
    let _ = writeln!(
        s,
        "| kernel | release | bare (s) | full (s) | ratio | target | met | guest: kernel to /init, bare / full (s) | guest: /init to power-off, full (s) | verifier load, full (s) | full verdict |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---|---|---|---:|---:|---|");
    for k in figures {
        let f = k.median_full();
        let b = k.median_bare();
        let agent = f.init_at_s.zip(f.end_at_s).map(|(i, e)| e - i);
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.2} | {:.2}x | <= 2x | {} | {} / {} | {} | {:.2} | {} |",
            k.line,
            k.release,
            k.bare_s(),
            k.full_s(),
            k.ratio(),
            if k.ratio() <= TARGET_RATIO { "yes" } else { "**no**" },
            opt(b.init_at_s),
            opt(f.init_at_s),
            opt(agent),
            f.verifier_load_s,
            f.verdict
        );
    }
    let _ = writeln!(s, "\n## Missed targets\n");
    let missed: Vec<&KernelFigures> = figures.iter().filter(|k| k.ratio() > TARGET_RATIO).collect();
    if missed.is_empty() {
        let _ = writeln!(s, "None in this run.");
    }
    for k in missed {
        let f = k.median_full();
        let b = k.median_bare();
        let over = k.full_s() - k.bare_s() * TARGET_RATIO;
        let agent = f.init_at_s.zip(f.end_at_s).map(|(i, e)| e - i);
        let bare_agent = b.init_at_s.zip(b.end_at_s).map(|(i, e)| e - i);
        let _ = writeln!(
            s,
            "- {}: {:.2}x, {:.2} s over the 2x budget of {:.2} s. The kernel reaches `/init` at {} s \
             (bare) and {} s (full) of guest time, a difference that is noise of an emulated clock on \
             a shared host, so the gap is the agent's own run: \
             {} s of guest time from `/init` to power-off (bare: {} s), of which {:.2} s is inside \
             `BPF_PROG_LOAD` (verifier + JIT, every program of the bundle, under {accel} emulation). \
             The rest is the checks' workloads and scenarios (process spawns, DNS and TCP exchanges, \
             waits for events) executed by an emulated CPU. The bound is therefore the agent's \
             work, not the harness: a 2x target would need the agent to fit in about the time the \
             kernel takes to boot.",
            k.line,
            k.ratio(),
            over,
            k.bare_s() * TARGET_RATIO,
            opt(b.init_at_s),
            opt(f.init_at_s),
            opt(agent),
            opt(bare_agent),
            f.verifier_load_s,
        );
    }
    if !skipped.is_empty() {
        let _ = writeln!(s, "\n## Not measured\n");
        for k in skipped {
            let _ = writeln!(s, "- {k}");
        }
    }
    s
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("verifier-matrix/ has a parent").to_path_buf()
}

/// The cargo target directory: this bench runs from `<target>/release/deps/`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program).args(args).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

fn now_utc() -> String {
    command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
}

fn machine() -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())))
        .unwrap_or_default();
    json!({
        "nproc": command_line("nproc", &[]),
        "kernel": command_line("uname", &["-r"]),
        "cpu": cpu,
        "loadavg_at_end": fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned(),
        "qemu": command_line(&runner_qemu(), &["--version"]).lines().next().unwrap_or("").to_owned(),
    })
}

fn runner_qemu() -> String {
    verifier_matrix::vm::qemu::qemu_binary().to_string_lossy().into_owned()
}
