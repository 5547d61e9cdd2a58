//! Runs the matrix: fetch each kernel, pack the guest, boot in parallel, judge each row.

use std::{
    collections::VecDeque,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    apt,
    fetch::{self, KernelArtifacts},
    initramfs::Initramfs,
    manifest::{Lock, LockedKernel},
    qemu::QemuConfig,
    report::{judge, Row, Verdict},
    results,
    runner::{self, GuestStatus},
    ui::{Progress, Ui},
};

/// Which kernels to run.
#[derive(Debug, Clone)]
pub enum Selection {
    /// The lock's `default = true` lines, the unavailable lines (as such), and the host.
    Default,
    /// Every line of the lock plus the host.
    All,
    /// Named lines; `host` names the running kernel.
    Lines(Vec<String>),
}

/// Everything a matrix run needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub workspace: PathBuf,
    pub selection: Selection,
    pub jobs: usize,
    pub timeout: Duration,
    pub kernel_file: Option<PathBuf>,
    pub modules: Option<PathBuf>,
    pub kernel_deb: Option<PathBuf>,
    pub out_dir: PathBuf,
    /// Store the snapshots this run produced instead of comparing with them.
    pub accept_snapshots: bool,
    /// A fault to inject into every VM, to prove the harness reports it and goes on.
    pub fault: Option<Fault>,
}

/// Faults the harness can inject (through the guest's kernel command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// The guest loads a program the verifier must reject.
    Rejected,
    /// The kernel finds no init and panics.
    Panic,
    /// The guest never finishes; the boot timeout ends it.
    Hang,
}

impl Fault {
    fn cmdline(self) -> &'static str {
        match self {
            Self::Rejected => "tapio.fixture=rejected",
            Self::Panic => "rdinit=/no-such-init",
            Self::Hang => "tapio.hang",
        }
    }
}

/// A kernel to boot, once its artifacts are in hand.
struct Bootable {
    index: usize,
    line: String,
    artifacts: KernelArtifacts,
}

enum Target {
    Locked(LockedKernel),
    Deb(PathBuf),
    Files(PathBuf, Option<PathBuf>),
    Host,
}

fn targets(options: &Options, lock: &Lock) -> Result<Vec<(String, Target)>> {
    let mut out = Vec::new();
    if let Some(deb) = &options.kernel_deb {
        out.push((format!("deb:{}", deb.display()), Target::Deb(deb.clone())));
    }
    if let Some(file) = &options.kernel_file {
        out.push((format!("file:{}", file.display()), Target::Files(file.clone(), options.modules.clone())));
    }
    let user_kernel = !out.is_empty();
    let (lines, host): (Vec<&LockedKernel>, bool) = match &options.selection {
        Selection::Default if user_kernel => (vec![], false),
        // Lines that cannot be had are listed too, as unavailable rows: the report must show them.
        Selection::Default => {
            (lock.kernels.iter().filter(|k| k.default || k.unavailable_reason().is_some()).collect(), true)
        }
        Selection::All => (lock.kernels.iter().collect(), true),
        Selection::Lines(names) => {
            let mut picked = Vec::new();
            for n in names.iter().filter(|n| n.as_str() != "host") {
                let k = lock.get(n).with_context(|| {
                    let known: Vec<_> = lock.kernels.iter().map(|k| k.line.as_str()).collect();
                    format!("unknown kernel line `{n}` (known: {}, host)", known.join(", "))
                })?;
                picked.push(k);
            }
            (picked, names.iter().any(|n| n == "host"))
        }
    };
    out.extend(lines.into_iter().map(|k| (k.line.clone(), Target::Locked(k.clone()))));
    if host {
        out.push(("host".to_owned(), Target::Host));
    }
    Ok(out)
}

fn empty_row(line: &str, verdict: Verdict) -> Row {
    Row { line: line.to_owned(), release: None, accel: None, wall: None, verdict, results: None, splats: vec![], console_tail: None }
}

/// Packs the guest agent (and the kernel config, for the record) into a newc initramfs. Public
/// so the matrix benchmark boots exactly the image the matrix boots.
pub fn pack(guest: &Path, artifacts: &KernelArtifacts, out: &Path) -> Result<()> {
    let mut image = Initramfs::new()
        .char_dev("/dev/console", 0o600, 5, 1)
        .file_from_path("/init", guest, 0o755)
        .context("initramfs: add the guest agent")?;
    if let Some(config) = &artifacts.config {
        image = image.file_from_path("/boot/config", config, 0o644).context("initramfs: add the kernel config")?;
    }
    image.write_to(out).with_context(|| format!("initramfs: write {}", out.display()))
}

/// Boots one kernel and judges it.
fn boot(b: &Bootable, guest: &Path, options: &Options, ui: &std::sync::mpsc::Sender<Progress>) -> Row {
    let dir = options.out_dir.join(b.line.replace(['/', ':'], "_"));
    let _ = std::fs::create_dir_all(&dir);
    let initrd = dir.join("initramfs.cpio");
    if let Err(e) = pack(guest, &b.artifacts, &initrd) {
        return empty_row(&b.line, Verdict::BootFailed(format!("{e:#}")));
    }
    let accel = runner::detect_accel(&b.artifacts.vmlinuz, &initrd);
    let _ = ui.send(Progress::BootStart { line: b.line.clone(), accel: accel.as_str().to_owned() });
    let mut cfg = QemuConfig::new(&b.artifacts.vmlinuz, &initrd, accel, dir.join("console.log"), dir.join("results.jsonl"));
    if let Some(fault) = options.fault {
        cfg.append_extra.push(fault.cmdline().to_owned());
    }
    let line = b.line.clone();
    let outcome = runner::run_guest(&cfg, options.timeout, |text| {
        let _ = ui.send(Progress::Boot { line: line.clone(), text: text.to_owned() });
    });
    let mut row = empty_row(&b.line, Verdict::Pass);
    row.release = Some(b.artifacts.release.clone());
    row.accel = Some(accel.as_str().to_owned());
    match outcome {
        Err(e) => row.verdict = Verdict::BootFailed(format!("qemu: {e}")),
        Ok(o) => {
            row.wall = Some(o.wall);
            let parsed = results::parse(&o.results_lines());
            row.verdict = match &o.status {
                GuestStatus::PoweredOff => judge(&parsed, &o.splats),
                GuestStatus::Panicked => Verdict::BootFailed("kernel panic".to_owned()),
                GuestStatus::TimedOut => Verdict::BootFailed(format!("no power-off within {:?}", options.timeout)),
                GuestStatus::Rebooted => Verdict::BootFailed("guest reset without power-off".to_owned()),
                GuestStatus::Stopped => Verdict::BootFailed("stopped".to_owned()),
                GuestStatus::QemuFailed { code, stderr } => {
                    Verdict::BootFailed(format!("qemu exited {code:?}: {}", stderr.trim()))
                }
            };
            if row.verdict != Verdict::Pass {
                row.console_tail = Some(o.console_tail(40));
            }
            let _ = ui.send(Progress::BootEnd {
                line: b.line.clone(),
                verdict: row.verdict.label().to_owned(),
                wall: o.wall,
                console: o.console.clone(),
            });
            row.results = Some(parsed);
            row.splats = o.splats;
        }
    }
    row
}

/// The host row: the same agent as a plain process on the running kernel.
fn host_row(guest: &Path, timeout: Duration) -> Row {
    let started = Instant::now();
    let mut row = empty_row("host", Verdict::Pass);
    let child = Command::new(guest).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return empty_row("host", Verdict::BootFailed(format!("run the agent: {e}"))),
    };
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    // The agent ends by itself; the deadline only guards against a hang.
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                row.verdict = Verdict::BootFailed(format!("agent did not finish within {timeout:?}"));
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                row.verdict = Verdict::BootFailed(format!("wait for the agent: {e}"));
                break;
            }
        }
    }
    let text = reader.join().unwrap_or_default();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let parsed = results::parse(&lines);
    row.wall = Some(started.elapsed());
    row.release = parsed.release.clone();
    row.accel = Some("none".to_owned());
    if row.verdict == Verdict::Pass {
        row.verdict = judge(&parsed, &[]);
    }
    row.results = Some(parsed);
    row
}

/// Runs the whole matrix and returns one row per target, in manifest order.
pub fn run(options: &Options, ui: &Ui) -> Result<Vec<Row>> {
    let lock_path = options.workspace.join("vm-images/kernels.lock");
    let lock = Lock::load(&lock_path).with_context(|| format!("read {}", lock_path.display()))?;
    let targets = targets(options, &lock)?;
    std::fs::create_dir_all(&options.out_dir).with_context(|| format!("create {}", options.out_dir.display()))?;

    ui.send(Progress::Stage(format!("building the guest agent ({})", crate::guest::GUEST_TARGET)));
    let guest = crate::guest::build(&options.workspace)?;

    // Fetch sequentially: downloads share one link and print one progress line at a time.
    let mirror = apt::discover_mirror();
    let cache = fetch::kernel_cache_dir().context("kernel cache directory")?;
    let mut rows: Vec<Option<Row>> = (0..targets.len()).map(|_| None).collect();
    let mut bootable = VecDeque::new();
    let mut host_index = None;
    for (index, (line, target)) in targets.into_iter().enumerate() {
        let artifacts = match target {
            Target::Host => {
                host_index = Some(index);
                continue;
            }
            Target::Locked(k) => {
                if let Some(reason) = k.unavailable_reason() {
                    rows[index] = Some(empty_row(&line, Verdict::Unavailable(reason.to_owned())));
                    continue;
                }
                ui.send(Progress::Stage(format!("kernel {line}: fetch (cached after the first run)")));
                // A cached kernel needs no mirror; an uncached one reports why there is none.
                match &mirror {
                    Ok(m) => fetch::ensure_kernel(&k, m, &cache).map_err(|e| e.to_string()),
                    Err(no_mirror) => fetch::ensure_kernel(&k, "", &cache).map_err(|e| format!("{e} ({no_mirror})")),
                }
            }
            Target::Deb(deb) => fetch::artifacts_from_deb(&deb, &cache).map_err(|e| e.to_string()),
            Target::Files(file, modules) => {
                fetch::artifacts_from_files(&file, modules.as_deref()).map_err(|e| e.to_string())
            }
        };
        match artifacts {
            Ok(artifacts) => bootable.push_back(Bootable { index, line, artifacts }),
            Err(e) => rows[index] = Some(empty_row(&line, Verdict::Unavailable(e))),
        }
    }

    if let Some(index) = host_index {
        ui.send(Progress::Stage("host kernel: running the agent directly".to_owned()));
        rows[index] = Some(host_row(&guest, options.timeout));
    }

    let queue = Arc::new(Mutex::new(bootable));
    let done = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.max(1) {
            let queue = Arc::clone(&queue);
            let done = Arc::clone(&done);
            let tx = ui.sender();
            let guest = &guest;
            scope.spawn(move || loop {
                let Some(b) = queue.lock().expect("queue").pop_front() else { return };
                let row = boot(&b, guest, options, &tx);
                done.lock().expect("rows").push((b.index, row));
            });
        }
    });
    for (index, row) in Arc::try_unwrap(done).expect("workers done").into_inner().expect("rows") {
        rows[index] = Some(row);
    }
    let mut rows: Vec<Row> = rows.into_iter().flatten().collect();
    check_snapshots(options, &mut rows);
    Ok(rows)
}

/// Compares every row's snapshots with the stored ones; drift fails the row with the diff.
/// Stored snapshots that no row produced fail the run (on the first row that booted).
fn check_snapshots(options: &Options, rows: &mut [Row]) {
    let mut referenced = std::collections::BTreeSet::new();
    for row in rows.iter_mut() {
        let Some(results) = &row.results else { continue };
        let mut problems = Vec::new();
        for snap in &results.snapshots {
            referenced.insert((snap.monitor.clone(), snap.scenario.clone()));
            let compared = crate::snapshots::compare(
                &options.workspace,
                &variant_key(row),
                &snap.monitor,
                &snap.scenario,
                &snap.body,
                options.accept_snapshots,
            );
            if let Err(diff) = compared {
                problems.push(diff);
            }
        }
        add_problems(row, problems);
    }
    let stale = crate::snapshots::unreferenced(&options.workspace, &referenced);
    // Only a run that produced snapshots can call others unreferenced.
    if !stale.is_empty() && !referenced.is_empty() {
        if let Some(row) = rows.iter_mut().find(|r| r.results.is_some()) {
            let names: Vec<String> = stale.iter().map(|p| p.display().to_string()).collect();
            add_problems(row, vec![format!("unreferenced snapshots: {}", names.join(", "))]);
        }
    }
}

/// The kernel line a row's per-kernel snapshot variants are named by: the manifest line, or for
/// a user-supplied kernel (`file:...`, `deb:...`) and the host, the release's `major.minor`, so
/// a brought 6.1 kernel meets the same reasoned variants as the manifest's 6.1.
fn variant_key(row: &Row) -> String {
    if row.line.starts_with(|c: char| c.is_ascii_digit()) {
        return row.line.clone();
    }
    row.release
        .as_deref()
        .and_then(|r| {
            let mut parts = r.split(|c: char| !c.is_ascii_digit());
            Some(format!("{}.{}", parts.next()?, parts.next()?))
        })
        .unwrap_or_else(|| row.line.clone())
}

fn add_problems(row: &mut Row, problems: Vec<String>) {
    if problems.is_empty() {
        return;
    }
    let joined = problems.join("\n");
    row.verdict = match std::mem::replace(&mut row.verdict, Verdict::Pass) {
        Verdict::Pass => Verdict::Fail(joined),
        Verdict::Fail(old) => Verdict::Fail(format!("{old}\n{joined}")),
        other => other,
    };
}
