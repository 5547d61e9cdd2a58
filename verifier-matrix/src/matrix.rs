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
    arch::{self, Arch, ArchExt as _, ArchFilter},
    artifacts::fetch::{self, KernelArtifacts},
    kernels::{
        apt,
        manifest::{Lock, LockedKernel},
        shard::{self, Candidate, Shard},
    },
    report::{
        document::{self, Planned, Report, SnapshotAudit, StoredSnapshot},
        judge::judge,
        results, Row, Verdict,
    },
    ui::{Progress, Ui},
    vm::{
        initramfs::Initramfs,
        qemu::{Accel, QemuConfig},
        runner::{self, GuestStatus},
    },
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
    /// Which architectures' rows to run (`--arch`).
    pub arch: ArchFilter,
    /// Which part of the selected rows this process runs (`--shard`; [`Shard::WHOLE`] for all).
    pub shard: Shard,
}

impl Selection {
    /// The selection as `--kernels` spells it, for the report.
    pub fn label(&self) -> String {
        match self {
            Self::Default => "default".to_owned(),
            Self::All => "all".to_owned(),
            Self::Lines(lines) => lines.join(","),
        }
    }
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
    arch: Arch,
    line: String,
    artifacts: KernelArtifacts,
}

/// What a row boots. A locked kernel is boxed: its pin is several times the size of the others.
enum Target {
    Locked(Box<LockedKernel>),
    Deb(PathBuf),
    Files(PathBuf, Option<PathBuf>),
    Host,
}

/// One selected row: its key (architecture, line) and what it boots.
type TargetRow = (Arch, String, Target);

impl Target {
    /// The architecture the target boots; a user's `--kernel-deb` or `--kernel-file` is taken to
    /// be the host's.
    fn arch(&self) -> Arch {
        match self {
            Target::Locked(k) => k.arch,
            Target::Deb(_) | Target::Files(..) | Target::Host => arch::host(),
        }
    }

    /// Whether the row boots something, for the shard split: the lock's unavailable lines do not.
    fn boots(&self) -> bool {
        !matches!(self, Target::Locked(k) if k.unavailable_reason().is_some())
    }
}

/// Every row the options select, in selection order: user-supplied kernels, the lock's lines in
/// lock order, the host; only the architectures `--arch` admits. A row's line is the kernel's
/// id (`6.1`, `arm64/6.12`); with its architecture, the key of its report row.
fn targets(options: &Options, lock: &Lock) -> Result<Vec<TargetRow>> {
    let mut out = Vec::new();
    if let Some(deb) = &options.kernel_deb {
        let target = Target::Deb(deb.clone());
        out.push((target.arch(), format!("deb:{}", deb.display()), target));
    }
    if let Some(file) = &options.kernel_file {
        let target = Target::Files(file.clone(), options.modules.clone());
        out.push((target.arch(), format!("file:{}", file.display()), target));
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
                // A line may exist for several architectures: `6.12` names each (as many rows),
                // an id such as `arm64/6.12` one.
                let found: Vec<&LockedKernel> = lock.kernels.iter().filter(|k| &k.line == n || &k.id() == n).collect();
                if found.is_empty() {
                    let known: Vec<_> = lock.kernels.iter().map(|k| k.id()).collect();
                    anyhow::bail!("unknown kernel line `{n}` (known: {}, host)", known.join(", "));
                }
                picked.extend(found);
            }
            (picked, names.iter().any(|n| n == "host"))
        }
    };
    out.extend(lines.into_iter().map(|k| (k.arch, k.id(), Target::Locked(Box::new(k.clone())))));
    if host {
        out.push((arch::host(), "host".to_owned(), Target::Host));
    }
    out.retain(|(arch, _, _)| options.arch.admits(*arch));
    Ok(out)
}

/// The selection as the report records it (every row with its shard), and this shard's rows.
fn plan(options: &Options, lock: &Lock) -> Result<(document::Selection, Vec<TargetRow>)> {
    let all = targets(options, lock)?;
    let candidates: Vec<Candidate> = all.iter().map(|(arch, _, t)| Candidate { arch: *arch, boots: t.boots() }).collect();
    let shard_of = shard::assign(&candidates, options.shard.count);
    let mut kernels = options.selection.label();
    for user in [options.kernel_deb.as_ref(), options.kernel_file.as_ref()].into_iter().flatten() {
        kernels.push_str(&format!(" + {}", user.display()));
    }
    let selection = document::Selection {
        kernels,
        arch: options.arch.to_string(),
        shards: options.shard.count,
        rows: all.iter().zip(&shard_of).map(|((arch, line, _), &shard)| Planned { arch: *arch, line: line.clone(), shard }).collect(),
    };
    let mine = all.into_iter().zip(shard_of).filter(|(_, s)| *s == options.shard.index).map(|(t, _)| t).collect();
    Ok((selection, mine))
}

fn empty_row(arch: Arch, line: &str, verdict: Verdict) -> Row {
    Row { arch, line: line.to_owned(), release: None, accel: None, wall: None, verdict, results: None, splats: vec![], console_tail: None }
}

/// The kernel modules the guest's scenarios load, as (directory in the release's module tree,
/// module name): veth for the veth-pair scenarios (network/tcp_veth, xdp/veth_prefixes).
pub const GUEST_MODULES: &[(&str, &str)] = &[("kernel/drivers/net", "veth")];

/// What the arm64 results port (a virtio console, `hvc0`) needs, in load order. Debian's arm64
/// 6.12 and later build it in; 5.10 and 6.1 build virtio-pci and virtio-console as modules, so
/// the guest loads these from [`RESULTS_MODULE_DIR`] before it opens the port. A module that is
/// built in, or absent from a release (the pci `_dev` helpers are 5.14+), is left out.
pub const RESULTS_PORT_MODULES: &[(&str, &str)] = &[
    ("kernel/drivers/virtio", "virtio"),
    ("kernel/drivers/virtio", "virtio_ring"),
    ("kernel/drivers/virtio", "virtio_pci_legacy_dev"),
    ("kernel/drivers/virtio", "virtio_pci_modern_dev"),
    ("kernel/drivers/virtio", "virtio_pci"),
    ("kernel/drivers/char", "virtio_console"),
];

/// Where the guest finds [`RESULTS_PORT_MODULES`], named `NN-<name>.ko` in load order.
pub const RESULTS_MODULE_DIR: &str = "lib/modules/results-port";

/// The booted kernel's own build of module `name` under `dir` of its modules directory, in any
/// of the compressions `Initramfs::add_module` reads; or why there is none, in words the guest
/// reports when the module's scenarios cannot run.
pub fn find_module(modules_dir: Option<&Path>, dir: &str, name: &str) -> Result<PathBuf, String> {
    let Some(modules) = modules_dir else {
        return Err("the kernel came without a modules directory (a --kernel-file run without --modules)".to_owned());
    };
    for ext in [".ko", ".ko.xz", ".ko.zst", ".ko.gz"] {
        let path = modules.join(dir).join(format!("{name}{ext}"));
        if path.is_file() {
            return Ok(path);
        }
    }
    let builtin = std::fs::read_to_string(modules.join("modules.builtin")).unwrap_or_default();
    if builtin.lines().any(|l| l.trim() == format!("{dir}/{name}.ko")) {
        return Err(format!("{name} is built into the kernel (modules.builtin), no module to load"));
    }
    Err(format!("{name}.ko is neither in {dir}/ of the kernel's modules nor in modules.builtin"))
}

/// Packs the guest agent, the modules its scenarios load (`/lib/modules/<name>.ko`, or a
/// `/lib/modules/<name>.missing` holding the reason there is none) and the kernel config, for
/// the record, into a newc initramfs. Public so the matrix benchmark boots exactly the image the
/// matrix boots.
pub fn pack(guest: &Path, arch: Arch, artifacts: &KernelArtifacts, out: &Path) -> Result<()> {
    let mut image = Initramfs::new()
        .char_dev("/dev/console", 0o600, 5, 1)
        .file_from_path("/init", guest, 0o755)
        .context("initramfs: add the guest agent")?;
    if arch == Arch::Arm64 {
        for (i, (dir, name)) in RESULTS_PORT_MODULES.iter().enumerate() {
            if let Ok(path) = find_module(artifacts.modules_dir.as_deref(), dir, name) {
                image = image
                    .add_module_in(RESULTS_MODULE_DIR, &format!("{i:02}-"), &path)
                    .with_context(|| format!("initramfs: add module {}", path.display()))?;
            }
        }
    }
    for (dir, name) in GUEST_MODULES {
        image = match find_module(artifacts.modules_dir.as_deref(), dir, name) {
            Ok(path) => image.add_module(&path).with_context(|| format!("initramfs: add module {}", path.display()))?,
            Err(why) => image.file(&format!("/{}/{name}.missing", crate::vm::initramfs::MODULE_DIR), why, 0o644),
        };
    }
    if let Some(config) = &artifacts.config {
        image = image.file_from_path("/boot/config", config, 0o644).context("initramfs: add the kernel config")?;
    }
    image.write_to(out).with_context(|| format!("initramfs: write {}", out.display()))
}

/// The booted kernel's own config, as its package ships it (`boot/config-<release>`, or
/// `lib/modules/<release>/config` in the 7.x packaging: fetch.rs finds either): the judge reads
/// the options that explain a missing feature from it. Public so the matrix benchmark judges its
/// rows as the matrix does.
pub fn guest_config(artifacts: &KernelArtifacts) -> Result<tapio_kernel_gates::KernelConfig, String> {
    let Some(path) = &artifacts.config else {
        return Err("the kernel came without a config (a --kernel-file run, or a package without one)".to_owned());
    };
    tapio_kernel_gates::KernelConfig::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Boots one kernel and judges it.
fn boot(b: &Bootable, guest: &Path, options: &Options, ui: &std::sync::mpsc::Sender<Progress>) -> Row {
    let dir = options.out_dir.join(b.line.replace(['/', ':'], "_"));
    let _ = std::fs::create_dir_all(&dir);
    let initrd = dir.join("initramfs.cpio");
    if let Err(e) = pack(guest, b.arch, &b.artifacts, &initrd) {
        return empty_row(b.arch, &b.line, Verdict::BootFailed(format!("{e:#}")));
    }
    // KVM runs only the host's own architecture; another one is always emulated.
    let accel = if b.arch.kvm_possible() { runner::detect_accel(&b.artifacts.vmlinuz, &initrd) } else { Accel::Tcg };
    // The line is the kernel's id, which names another architecture's row (`arm64/6.12`).
    let label = b.line.clone();
    let _ = ui.send(Progress::BootStart { line: label.clone(), accel: accel.as_str().to_owned() });
    let mut cfg = QemuConfig::new(&b.artifacts.vmlinuz, &initrd, accel, dir.join("console.log"), dir.join("results.jsonl"));
    cfg.arch = b.arch;
    if let Some(fault) = options.fault {
        cfg.append_extra.push(fault.cmdline().to_owned());
    }
    let line = label.clone();
    let outcome = runner::run_guest(&cfg, options.timeout, |text| {
        let _ = ui.send(Progress::Boot { line: line.clone(), text: text.to_owned() });
    });
    let mut row = empty_row(b.arch, &b.line, Verdict::Pass);
    row.release = Some(b.artifacts.release.clone());
    row.accel = Some(accel.as_str().to_owned());
    match outcome {
        Err(e) => row.verdict = Verdict::BootFailed(format!("qemu: {e}")),
        Ok(o) => {
            row.wall = Some(o.wall);
            let mut parsed = results::parse(&o.results_lines());
            parsed.set_config(guest_config(&b.artifacts));
            parsed.set_arch(b.arch);
            parsed.explain();
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
                line: label.clone(),
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
    let mut row = empty_row(arch::host(), "host", Verdict::Pass);
    let child = Command::new(guest).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return empty_row(arch::host(), "host", Verdict::BootFailed(format!("run the agent: {e}"))),
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
    let mut parsed = results::parse(&lines);
    let release = parsed.release.clone().unwrap_or_default();
    parsed.set_config(
        tapio_kernel_gates::KernelConfig::running(&release)
            .ok_or_else(|| format!("neither /proc/config.gz nor /boot/config-{release} is readable")),
    );
    parsed.set_arch(arch::host());
    parsed.explain();
    row.wall = Some(started.elapsed());
    row.release = parsed.release.clone();
    row.accel = Some("none".to_owned());
    if row.verdict == Verdict::Pass {
        row.verdict = judge(&parsed, &[]);
    }
    row.results = Some(parsed);
    row
}

/// Runs the matrix (this shard of it) and returns one row per target, in selection order.
pub fn run(options: &Options, ui: &Ui) -> Result<Vec<Row>> {
    run_report(options, ui).map(|r| r.rows)
}

/// Runs the matrix (this shard of it) and returns its report.
///
/// Two runs may share the machine, the kernel cache (each entry is fetched under a lock) and
/// the cargo target directory (cargo locks it), but not an output directory: a caller that
/// writes into `out_dir` holds [`lock_out_dir`] from before the run until the report is written.
pub fn run_report(options: &Options, ui: &Ui) -> Result<Report> {
    let lock_path = options.workspace.join("vm-images/kernels.lock");
    let lock = Lock::load(&lock_path).with_context(|| format!("read {}", lock_path.display()))?;
    let source = document::Source::of_workspace(&options.workspace);
    let (selection, targets) = plan(options, &lock)?;
    std::fs::create_dir_all(&options.out_dir).with_context(|| format!("create {}", options.out_dir.display()))?;
    let host_selected = selection.rows.iter().any(|p| p.line == "host");
    let holds_host = targets.iter().any(|(_, _, t)| matches!(t, Target::Host));
    let rows = run_targets(options, ui, targets)?;
    let mut rows = rows;
    let stale_variants = check_snapshots(options, &mut rows);
    let snapshots = SnapshotAudit {
        stored: stored_snapshots(&options.workspace),
        // Which variants are live depends on the host's release: the shard with the host row
        // says, or any shard when no host row was selected.
        stale_variants: (holds_host || !host_selected).then_some(stale_variants),
    };
    let accel = match runner::accel_detection() {
        Some(d) => vec![format!("{} ({}, decided in {:.2} s)", d.accel.as_str(), d.reason, d.took.as_secs_f64())],
        None => vec![],
    };
    Ok(Report::new(source, selection, vec![options.shard.index], accel, rows, snapshots))
}

/// Takes `out_dir` for this process (creating it), or fails at once when another harness
/// process holds it: two runs writing one report and one set of row directories would mix them.
pub fn lock_out_dir(out_dir: &Path) -> Result<crate::artifacts::lock::FileLock> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    crate::artifacts::lock::FileLock::try_exclusive(&out_dir.join(".lock"))
        .with_context(|| format!("output directory {}", out_dir.display()))
}

/// Every stored snapshot file, relative to the workspace, with its (monitor, scenario).
fn stored_snapshots(workspace: &Path) -> Vec<StoredSnapshot> {
    let mut out: Vec<StoredSnapshot> = crate::report::snapshots::unreferenced(workspace, &Default::default())
        .into_iter()
        .filter_map(|path| {
            let monitor = path.parent()?.file_name()?.to_string_lossy().into_owned();
            let stem = path.file_stem()?.to_string_lossy().into_owned();
            let scenario = stem.split_once('@').map_or(stem.as_str(), |(s, _)| s).to_owned();
            let relative = path.strip_prefix(workspace).unwrap_or(&path).display().to_string();
            Some(StoredSnapshot { path: relative, monitor, scenario })
        })
        .collect();
    out.sort();
    out
}

/// Fetches, packs and boots `targets`, returning their rows in the same order.
fn run_targets(options: &Options, ui: &Ui, targets: Vec<TargetRow>) -> Result<Vec<Row>> {
    if targets.is_empty() {
        // A shard past the end of a short selection: nothing to build or boot.
        ui.send(Progress::Stage(format!("shard {}: no rows", options.shard)));
        return Ok(Vec::new());
    }

    // One agent per architecture the run needs: the host's (the host row, and user kernels,
    // which are taken to be the host's architecture) and each selected kernel's.
    let mut arches = std::collections::BTreeSet::from([arch::host()]);
    arches.extend(targets.iter().map(|(arch, _, _)| *arch));
    let mut guests = std::collections::BTreeMap::new();
    for arch in arches {
        ui.send(Progress::Stage(format!("building the guest agent ({})", arch.guest_target())));
        guests.insert(arch, crate::artifacts::guest::build(&options.workspace, arch)?);
    }
    let guest = guests[&arch::host()].clone();

    // Fetch sequentially: downloads share one link and print one progress line at a time.
    let mirror = apt::discover_mirror();
    let cache = fetch::kernel_cache_dir().context("kernel cache directory")?;
    let mut rows: Vec<Option<Row>> = (0..targets.len()).map(|_| None).collect();
    let mut bootable = VecDeque::new();
    let mut host_index = None;
    for (index, (arch, line, target)) in targets.into_iter().enumerate() {
        let artifacts = match target {
            Target::Host => {
                host_index = Some(index);
                continue;
            }
            Target::Locked(k) => {
                if let Some(reason) = k.unavailable_reason() {
                    rows[index] = Some(empty_row(arch, &line, Verdict::Unavailable(reason.to_owned())));
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
            Ok(artifacts) => bootable.push_back(Bootable { index, arch, line, artifacts }),
            Err(e) => rows[index] = Some(empty_row(arch, &line, Verdict::Unavailable(e))),
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
            let guests = &guests;
            scope.spawn(move || loop {
                let Some(b) = queue.lock().expect("queue").pop_front() else { return };
                let row = boot(&b, &guests[&b.arch], options, &tx);
                done.lock().expect("rows").push((b.index, row));
            });
        }
    });
    for (index, row) in Arc::try_unwrap(done).expect("workers done").into_inner().expect("rows") {
        rows[index] = Some(row);
    }
    Ok(rows.into_iter().flatten().collect())
}

/// Compares every row's snapshots with the stored ones; drift fails the row with the diff.
/// Every row that ran must produce every stored scenario's snapshot, or skip the scenario with a
/// skip line named `<monitor>.<scenario>` that carries the kernel's reason (listed, never a
/// pass); a row that did neither fails. Returns the stored variants for kernels the matrix never
/// runs (relative to the workspace): stored snapshots that no row produced fail the run, which
/// [`Report::judge_run`] decides over all the rows, so that shards joined judge as one run.
fn check_snapshots(options: &Options, rows: &mut [Row]) -> Vec<String> {
    let stored = crate::report::snapshots::stored_scenarios(&options.workspace);
    for row in rows.iter_mut() {
        let Some(results) = &row.results else { continue };
        let row_skipped: std::collections::BTreeSet<_> = results
            .skips
            .iter()
            .filter_map(|skip| skip.name.split_once('.'))
            .map(|(monitor, scenario)| (monitor.to_owned(), scenario.to_owned()))
            .collect();
        let produced: std::collections::BTreeSet<_> =
            results.snapshots.iter().map(|s| (s.monitor.clone(), s.scenario.clone())).collect();
        let mut problems: Vec<String> = stored
            .iter()
            .filter(|k| !produced.contains(*k) && !row_skipped.contains(*k))
            .map(|(m, s)| format!("snapshot {m}/{s} not produced, and no skip line `{m}.{s}` says why"))
            .collect();
        for snap in &results.snapshots {
            let compared = crate::report::snapshots::compare(
                &options.workspace,
                &variant_key(row),
                &snap.monitor,
                &snap.scenario,
                &snap.body,
                options.accept_snapshots,
            );
            if let Err(diff) = compared {
                problems.push(diff.to_string());
            }
        }
        add_problems(row, problems);
    }
    // A variant for a kernel the matrix never runs (neither a manifest line nor the host) is
    // unreferenced too, whichever kernels this run chose.
    let Ok(lock) = Lock::load(&options.workspace.join("vm-images/kernels.lock")) else { return Vec::new() };
    let host = rows.iter().find(|r| r.line == "host").and_then(|r| r.release.clone()).or_else(host_release);
    let live = crate::report::snapshots::live_kernels(&lock, host.as_deref());
    tapio_snapshots::audit(&options.workspace, &live)
        .stale
        .into_iter()
        .map(|p| p.strip_prefix(&options.workspace).map(Path::to_path_buf).unwrap_or(p).display().to_string())
        .collect()
}

/// The kernel line a row's per-kernel snapshot variants are named by: the manifest line's
/// version (`6.1` for `6.1` and `6.1-rt`), or for a user-supplied kernel (`file:...`, `deb:...`)
/// and the host, the release's `major.minor`, so a brought 6.1 kernel meets the same reasoned
/// variants as the manifest's 6.1.
fn variant_key(row: &Row) -> String {
    if row.line.starts_with(|c: char| c.is_ascii_digit()) {
        return crate::kernels::manifest::line_version(&row.line).to_owned();
    }
    row.release.as_deref().and_then(crate::report::snapshots::release_key).unwrap_or_else(|| row.line.clone())
}

/// The running kernel's release (`uname -r`), whose `major.minor` the host row's variants use.
pub fn host_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavoured_rows_meet_their_versions_snapshot_variants() {
        let mut rt = empty_row(Arch::X86_64, "6.1-rt", Verdict::Pass);
        rt.release = Some("6.1.0-50-rt-amd64".to_owned());
        assert_eq!(variant_key(&rt), "6.1");
        assert_eq!(variant_key(&empty_row(Arch::X86_64, "6.12", Verdict::Pass)), "6.12");
        let mut deb = empty_row(Arch::X86_64, "deb:x.deb", Verdict::Pass);
        deb.release = Some("6.1.0-54-rt-amd64".to_owned());
        assert_eq!(variant_key(&deb), "6.1");
    }

    #[test]
    fn modules_are_found_compressed_or_explained() {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path();
        let net = modules.join("kernel/drivers/net");
        std::fs::create_dir_all(&net).unwrap();
        let why = find_module(None, "kernel/drivers/net", "veth").unwrap_err();
        assert!(why.contains("without a modules directory"), "{why}");
        let why = find_module(Some(modules), "kernel/drivers/net", "veth").unwrap_err();
        assert!(why.contains("neither in kernel/drivers/net/"), "{why}");
        std::fs::write(modules.join("modules.builtin"), "kernel/drivers/net/dummy.ko\nkernel/drivers/net/veth.ko\n").unwrap();
        let why = find_module(Some(modules), "kernel/drivers/net", "veth").unwrap_err();
        assert!(why.contains("built into the kernel"), "{why}");
        std::fs::write(net.join("veth.ko.xz"), b"").unwrap();
        assert_eq!(find_module(Some(modules), "kernel/drivers/net", "veth").unwrap(), net.join("veth.ko.xz"));
        std::fs::write(net.join("veth.ko"), b"").unwrap();
        assert_eq!(find_module(Some(modules), "kernel/drivers/net", "veth").unwrap(), net.join("veth.ko"));
    }

    /// Default-matrix options whose workspace and output are `dir` (snapshot checks only).
    fn options_in(dir: &std::path::Path) -> Options {
        Options {
            workspace: dir.to_owned(),
            selection: Selection::Default,
            jobs: 1,
            timeout: Duration::from_secs(1),
            kernel_file: None,
            modules: None,
            kernel_deb: None,
            out_dir: dir.to_owned(),
            accept_snapshots: false,
            fault: None,
            arch: ArchFilter::All,
            shard: Shard::WHOLE,
        }
    }

    /// The report of `rows` after the snapshot checks, as a run of them writes it.
    fn judged(options: &Options, rows: &mut [Row]) -> Report {
        let stale_variants = check_snapshots(options, rows);
        let mut report = Report::of_rows(rows.to_vec());
        report.snapshots = SnapshotAudit { stored: stored_snapshots(&options.workspace), stale_variants: Some(stale_variants) };
        report.judge_run();
        report
    }

    /// A lock with an x86_64 and an arm64 6.12, an unavailable line, and an x86_64-only line.
    fn two_arch_lock() -> Lock {
        let text = "[[kernel]]\nline = \"4.19\"\ndefault = true\nunavailable = \"gone\"\n\n\
                    [[kernel]]\nline = \"6.1\"\ndefault = true\nkernel_file = \"/k/6.1\"\n\n\
                    [[kernel]]\nline = \"6.12\"\ndefault = true\nkernel_file = \"/k/6.12\"\n\n\
                    [[kernel]]\nline = \"6.12\"\ndefault = true\narch = \"arm64\"\nkernel_file = \"/k/6.12-arm64\"\n";
        Lock::parse(text, Path::new("kernels.lock"), PathBuf::from("/")).expect("lock")
    }

    fn planned(options: &Options, lock: &Lock) -> Vec<(String, u32)> {
        let (selection, mine) = plan(options, lock).expect("plan");
        let keys: Vec<(String, u32)> = selection.rows.iter().map(|p| (p.key().to_string(), p.shard)).collect();
        // This shard's targets are the selection's rows of this shard, in order.
        let own: Vec<String> = keys.iter().filter(|(_, s)| *s == options.shard.index).map(|(k, _)| k.clone()).collect();
        assert_eq!(mine.iter().map(|(arch, line, _)| crate::report::RowKey { arch: *arch, line: line.clone() }.to_string()).collect::<Vec<_>>(), own);
        keys
    }

    #[rstest::rstest]
    #[case::all(ArchFilter::All, Selection::Default, &["x86_64/4.19", "x86_64/6.1", "x86_64/6.12", "arm64/6.12", "x86_64/host"])]
    #[case::arm64_only(ArchFilter::Only(Arch::Arm64), Selection::Default, &["arm64/6.12"])]
    #[case::x86_64_only(ArchFilter::Only(Arch::X86_64), Selection::Default, &["x86_64/4.19", "x86_64/6.1", "x86_64/6.12", "x86_64/host"])]
    #[case::a_line_of_two_archs(ArchFilter::All, Selection::Lines(vec!["6.12".into()]), &["x86_64/6.12", "arm64/6.12"])]
    fn arch_selects_rows_keyed_by_arch_and_line(#[case] arch: ArchFilter, #[case] selection: Selection, #[case] want: &[&str]) {
        if arch::host() != Arch::X86_64 {
            return; // the cases name the host row's architecture
        }
        let dir = tempfile::tempdir().unwrap();
        let options = Options { arch, selection, ..options_in(dir.path()) };
        let keys: Vec<String> = planned(&options, &two_arch_lock()).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, want);
    }

    /// The split of a real plan: booting rows first by (arch, selection order), round-robin.
    #[test]
    fn a_plan_splits_into_the_documented_shards() {
        let dir = tempfile::tempdir().unwrap();
        let lock = two_arch_lock();
        let mut seen = Vec::new();
        for index in 1..=2 {
            let options = Options { shard: Shard { index, count: 2 }, ..options_in(dir.path()) };
            let keys = planned(&options, &lock);
            if arch::host() == Arch::X86_64 {
                // Booting x86_64 6.1, 6.12, host, then arm64 6.12, then the unavailable 4.19.
                assert_eq!(keys, [("x86_64/4.19", 1), ("x86_64/6.1", 1), ("x86_64/6.12", 2), ("arm64/6.12", 2), ("x86_64/host", 1)].map(|(k, s)| (k.to_owned(), s)));
            }
            seen.push(keys);
        }
        assert_eq!(seen[0], seen[1], "every shard computes the same split");
    }

    /// A stored snapshot no row produced fails the run, unless a row skipped its scenario.
    #[test]
    fn a_skipped_scenario_accounts_for_its_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        crate::report::snapshots::compare(dir.path(), "6.1", "process", "exec_chain", "[1]", true).unwrap();
        crate::report::snapshots::compare(dir.path(), "6.1", "xdp", "veth_prefixes", "[2]", true).unwrap();
        let options = options_in(dir.path());
        let row = |skip: Option<&str>| {
            let mut results = results::GuestResults::default();
            results.snapshots.push(results::SnapshotBody {
                monitor: "process".to_owned(),
                scenario: "exec_chain".to_owned(),
                body: "[1]".to_owned(),
            });
            if let Some(name) = skip {
                results.skips.push(results::SkipResult {
                    name: name.to_owned(),
                    detail: "no veth".to_owned(),
                    needs: tapio_kernel_gates::Needs::one("veth"),
                    judgement: None,
                });
            }
            let mut r = empty_row(Arch::X86_64, "6.1", Verdict::Pass);
            r.results = Some(results);
            r
        };
        let mut rows = [row(None)];
        let report = judged(&options, &mut rows);
        assert!(
            matches!(report.problems.as_slice(), [why] if why.contains("unreferenced snapshots") && why.contains("veth_prefixes")),
            "{:?}",
            report.problems
        );
        assert_eq!(report.exit_status(), 1, "an unreferenced snapshot fails the run");
        let mut rows = [row(Some("xdp.veth_prefixes"))];
        let report = judged(&options, &mut rows);
        assert_eq!(rows[0].verdict, Verdict::Pass);
        assert_eq!(report.problems, Vec::<String>::new());
    }

    /// A variant for a kernel the matrix never runs (no line of the lock, not the host) is an
    /// unreferenced snapshot, whichever kernels the run chose.
    #[test]
    fn a_variant_for_a_kernel_the_matrix_never_runs_is_unreferenced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("vm-images")).unwrap();
        std::fs::write(dir.path().join("vm-images/kernels.lock"), "[[kernel]]\nline = \"6.1\"\ndefault = true\nunavailable = \"x\"\n").unwrap();
        crate::report::snapshots::compare(dir.path(), "6.1", "process", "exec_chain", "[1]", true).unwrap();
        let shared = std::fs::read_to_string(crate::report::snapshots::snap_path(dir.path(), "process", "exec_chain")).unwrap();
        let variant = shared.replacen("expression: events\n", "expression: events\ninfo:\n  kernel: \"4.19\"\n  reason: old\n", 1);
        std::fs::write(crate::report::snapshots::variant_path(dir.path(), "process", "exec_chain", "4.19"), variant).unwrap();
        let mut results = results::GuestResults::default();
        results.snapshots.push(results::SnapshotBody { monitor: "process".to_owned(), scenario: "exec_chain".to_owned(), body: "[1]".to_owned() });
        let mut row = empty_row(Arch::X86_64, "6.1", Verdict::Pass);
        row.results = Some(results);
        let mut rows = [row];
        let report = judged(&options_in(dir.path()), &mut rows);
        assert!(
            matches!(report.problems.as_slice(), [why] if why.contains("unreferenced snapshots") && why.contains("exec_chain@4.19.snap")),
            "{:?}",
            report.problems
        );
    }

    /// issue 15, item 10: another row producing a scenario's snapshot does not excuse a row that
    /// produced it not, nor skipped it.
    #[test]
    fn every_row_produces_every_stored_scenario_or_skips_it() {
        let dir = tempfile::tempdir().unwrap();
        crate::report::snapshots::compare(dir.path(), "6.1", "process", "exec_chain", "[1]", true).unwrap();
        crate::report::snapshots::compare(dir.path(), "6.1", "dns", "udp_tcp", "[2]", true).unwrap();
        let options = options_in(dir.path());
        let row = |line: &str, scenarios: &[(&str, &str, &str)]| {
            let mut results = results::GuestResults::default();
            for (monitor, scenario, body) in scenarios {
                results.snapshots.push(results::SnapshotBody {
                    monitor: (*monitor).to_owned(),
                    scenario: (*scenario).to_owned(),
                    body: (*body).to_owned(),
                });
            }
            let mut r = empty_row(Arch::X86_64, line, Verdict::Pass);
            r.results = Some(results);
            r
        };
        let mut rows = [
            row("6.1", &[("process", "exec_chain", "[1]"), ("dns", "udp_tcp", "[2]")]),
            row("6.12", &[("process", "exec_chain", "[1]")]),
        ];
        let _ = check_snapshots(&options, &mut rows);
        assert_eq!(rows[0].verdict, Verdict::Pass);
        assert!(
            matches!(&rows[1].verdict, Verdict::Fail(why) if why.contains("snapshot dns/udp_tcp not produced")),
            "{:?}",
            rows[1].verdict
        );
    }

    /// The image holds the module where the guest loads it from, or the reason it has none.
    #[test]
    fn pack_adds_the_guest_modules_or_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let guest = dir.path().join("agent");
        std::fs::write(&guest, b"agent").unwrap();
        let modules = dir.path().join("lib/modules/9.9.9");
        std::fs::create_dir_all(modules.join("kernel/drivers/net")).unwrap();
        std::fs::write(modules.join("kernel/drivers/net/veth.ko"), b"\x7fELF-veth").unwrap();
        let mut artifacts = KernelArtifacts {
            release: "9.9.9".to_owned(),
            vmlinuz: dir.path().join("vmlinuz"),
            config: None,
            modules_dir: Some(modules),
        };
        let has = |image: &Path, needle: &[u8]| std::fs::read(image).unwrap().windows(needle.len()).any(|w| w == needle);
        let image = dir.path().join("with.cpio");
        pack(&guest, Arch::X86_64, &artifacts, &image).unwrap();
        assert!(has(&image, b"lib/modules/veth.ko\0") && has(&image, b"\x7fELF-veth"));
        assert!(!has(&image, b"veth.missing"));
        artifacts.modules_dir = None;
        let image = dir.path().join("without.cpio");
        pack(&guest, Arch::X86_64, &artifacts, &image).unwrap();
        assert!(has(&image, b"lib/modules/veth.missing\0") && has(&image, b"without a modules directory"));
        assert!(!has(&image, b"lib/modules/veth.ko\0"));
    }

    /// arm64 images carry the results port's modules the kernel has, numbered in load order;
    /// x86 images never do (their results port is a built-in UART).
    #[test]
    fn arm64_images_carry_the_results_port_modules_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let guest = dir.path().join("agent");
        std::fs::write(&guest, b"agent").unwrap();
        let modules = dir.path().join("lib/modules/6.1.0");
        for (sub, name) in [("kernel/drivers/virtio", "virtio_pci"), ("kernel/drivers/char", "virtio_console")] {
            std::fs::create_dir_all(modules.join(sub)).unwrap();
            std::fs::write(modules.join(sub).join(format!("{name}.ko")), format!("\x7fELF-{name}")).unwrap();
        }
        let artifacts = KernelArtifacts { release: "6.1.0".to_owned(), vmlinuz: dir.path().join("vmlinuz"), config: None, modules_dir: Some(modules) };
        let has = |image: &Path, needle: &str| std::fs::read(image).unwrap().windows(needle.len()).any(|w| w == needle.as_bytes());
        let image = dir.path().join("arm64.cpio");
        pack(&guest, Arch::Arm64, &artifacts, &image).unwrap();
        assert!(has(&image, "lib/modules/results-port/04-virtio_pci.ko\0"), "virtio_pci is fifth in load order");
        assert!(has(&image, "lib/modules/results-port/05-virtio_console.ko\0"));
        assert!(!has(&image, "results-port/00-virtio.ko"), "a module the kernel does not ship is left out");
        let image = dir.path().join("x86.cpio");
        pack(&guest, Arch::X86_64, &artifacts, &image).unwrap();
        assert!(!has(&image, "results-port"));
    }
}
