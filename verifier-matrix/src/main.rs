//! `cargo xtask`: the verifier matrix and the kernel image lock.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use verifier_matrix::{
    arch::ArchFilter,
    kernels::{apt, index, manifest::Manifest, shard::Shard},
    matrix::{self, Selection},
    report::merge,
    ui::Ui,
};

#[derive(Parser)]
#[command(name = "xtask", about = "tapio-probes harness: prove the bundle on real kernels")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once per process; boxing the options would only add noise")]
enum Cmd {
    /// Boot each kernel in QEMU with the bundle inside and report what loaded, attached and decoded.
    ///
    /// Writes report.md and report.json into --out; exits 0 when every row passed, 1 when a
    /// probe or check failed (or nothing passed), 2 when a kernel did not boot, 3 when the
    /// harness itself failed.
    #[command(args_conflicts_with_subcommands = true)]
    VerifierMatrix {
        #[command(subcommand)]
        command: Option<MatrixCmd>,
        /// `default` (the lock's default lines and the host), `all`, or a comma list such as `6.1,host`.
        #[arg(long, default_value = "default")]
        kernels: String,
        /// Parallel boots (default: the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Wall-clock limit per boot, in seconds.
        #[arg(long, default_value_t = 180)]
        timeout: u64,
        /// Boot this vmlinuz instead of (or, with --kernels, besides) the manifest's kernels.
        #[arg(long)]
        kernel_file: Option<PathBuf>,
        /// Modules directory for --kernel-file.
        #[arg(long, requires = "kernel_file")]
        modules: Option<PathBuf>,
        /// Boot the kernel in this Debian package.
        #[arg(long)]
        kernel_deb: Option<PathBuf>,
        /// Store the decoded-event snapshots this run produces instead of comparing with them.
        #[arg(long)]
        accept_snapshots: bool,
        /// Inject a fault into every VM (to prove the harness reports it and goes on).
        #[arg(long, value_enum, hide = true)]
        fault: Option<matrix::Fault>,
        /// Print every console line.
        #[arg(long, short)]
        verbose: bool,
        /// Rows of this architecture only: x86_64, arm64 or all.
        #[arg(long, default_value = "all")]
        arch: ArchFilter,
        /// Run shard i of n of the selected rows (e.g. 1/2), for `report merge` to join; the
        /// split is documented in verifier-matrix/src/kernels/shard.rs.
        #[arg(long)]
        shard: Option<Shard>,
        /// Directory for the report and each row's files (default: target/verifier-matrix, or
        /// target/verifier-matrix/shard-<i>-of-<n> with --shard, so shards can run side by side).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Manage the kernel images the matrix boots.
    VmImages {
        #[command(subcommand)]
        command: ImagesCmd,
    },
}

#[derive(Subcommand)]
enum MatrixCmd {
    /// Work with matrix reports.
    Report {
        #[command(subcommand)]
        command: ReportCmd,
    },
}

#[derive(Subcommand)]
enum ReportCmd {
    /// Join the report.json of every shard of one run into one report (report.json and
    /// report.md in --out, the Markdown on stdout). Refuses reports of different sources or
    /// selections, a row in two reports, a missing shard, or a file that is not a report.
    /// Exits as one matrix run of the whole selection would (0, 1 or 2; 3 when it cannot merge).
    Merge {
        /// The shards' report.json files.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Where to write the merged report (default: target/verifier-matrix/merged).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also append the Markdown to this file, or why the reports could not be merged (for
        /// CI's job summary, `$GITHUB_STEP_SUMMARY`).
        #[arg(long)]
        summary: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ImagesCmd {
    /// Re-resolve vm-images/kernels.toml against the package indices into vm-images/kernels.lock.
    Update,
    /// Fetch one locked kernel line (if not cached) and print its vmlinuz path.
    Path {
        /// The kernel line, e.g. `6.1`.
        line: String,
    },
}

fn workspace() -> PathBuf {
    // CARGO_MANIFEST_DIR is verifier-matrix/; the workspace is its parent.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

fn update_images() -> Result<()> {
    let dir = workspace().join("vm-images");
    let manifest = Manifest::load(&dir.join("kernels.toml"))?;
    let mirror = apt::discover_mirror()?;
    let lock = index::update_lock(&manifest, &mirror)?;
    lock.write(&dir.join("kernels.lock"))?;
    for k in &lock.kernels {
        match k.unavailable_reason() {
            Some(why) => println!("{:<11} unavailable: {why}", k.id()),
            None => println!("{:<11} {}", k.id(), k.pin.packages().iter().map(|p| format!("{} {}", p.package, p.version)).collect::<Vec<_>>().join(", ")),
        }
    }
    Ok(())
}

fn verifier_matrix(options: matrix::Options, verbose: bool) -> Result<ExitCode> {
    // Held until the report is written.
    let _out = matrix::lock_out_dir(&options.out_dir)?;
    let ui = Ui::start(verbose);
    let report = matrix::run_report(&options, &ui);
    ui.finish();
    let report = report?;
    let md = report.write(&options.out_dir).with_context(|| format!("write the report into {}", options.out_dir.display()))?;
    println!("{md}");
    println!("report: {}", options.out_dir.join("report.md").display());
    Ok(ExitCode::from(report.exit_status()))
}

fn merge_reports(reports: &[PathBuf], out: &std::path::Path, summary: Option<&std::path::Path>) -> Result<ExitCode> {
    let append_summary = |text: &str| -> Result<()> {
        let Some(path) = summary else { return Ok(()) };
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("open {}", path.display()))?;
        f.write_all(text.as_bytes()).with_context(|| format!("write {}", path.display()))
    };
    let _out = matrix::lock_out_dir(out)?;
    let merged = match merge::merge_files(reports) {
        Ok(m) => m,
        Err(e) => {
            append_summary(&format!("# Verifier matrix\n\nThe shard reports could not be merged: {e}\n"))?;
            return Err(e.into());
        }
    };
    let md = merged.write(out).with_context(|| format!("write the merged report into {}", out.display()))?;
    append_summary(&md)?;
    println!("{md}");
    println!("report: {}", out.join("report.md").display());
    Ok(ExitCode::from(merged.exit_status()))
}

fn real_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::VmImages { command: ImagesCmd::Update } => update_images().map(|()| ExitCode::SUCCESS),
        Cmd::VmImages { command: ImagesCmd::Path { line } } => {
            let lock_path = workspace().join("vm-images/kernels.lock");
            let lock = verifier_matrix::kernels::manifest::Lock::load(&lock_path)?;
            let kernel = lock.get(&line).with_context(|| format!("no kernel line `{line}` in {}", lock_path.display()))?;
            let mirror = apt::discover_mirror().unwrap_or_default();
            let cache = verifier_matrix::artifacts::fetch::kernel_cache_dir()?;
            let artifacts = verifier_matrix::artifacts::fetch::ensure_kernel(kernel, &mirror, &cache)?;
            println!("{}", artifacts.vmlinuz.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::VerifierMatrix { command: Some(MatrixCmd::Report { command: ReportCmd::Merge { reports, out, summary } }), .. } => {
            merge_reports(&reports, &out.unwrap_or_else(|| workspace().join("target/verifier-matrix/merged")), summary.as_deref())
        }
        Cmd::VerifierMatrix {
            command: None,
            kernels,
            jobs,
            timeout,
            kernel_file,
            modules,
            kernel_deb,
            accept_snapshots,
            fault,
            verbose,
            arch,
            shard,
            out,
        } => {
            let selection = match kernels.as_str() {
                "default" => Selection::Default,
                "all" => Selection::All,
                list => Selection::Lines(list.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()),
            };
            let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
            let workspace = workspace();
            let out_dir = out.unwrap_or_else(|| match shard {
                Some(s) => workspace.join(format!("target/verifier-matrix/shard-{}-of-{}", s.index, s.count)),
                None => workspace.join("target/verifier-matrix"),
            });
            let options = matrix::Options {
                out_dir,
                arch,
                shard: shard.unwrap_or(Shard::WHOLE),
                workspace,
                selection,
                jobs,
                timeout: Duration::from_secs(timeout),
                kernel_file,
                modules,
                kernel_deb,
                accept_snapshots,
                fault,
            };
            verifier_matrix(options, verbose)
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TAPIO_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    // The rows carry each snapshot diff into the report; insta's own printout of it (a whole
    // snapshot for each kernel's pending entry) is off unless INSTA_OUTPUT asks for it. Set
    // before any thread starts.
    if std::env::var_os("INSTA_OUTPUT").is_none() {
        std::env::set_var("INSTA_OUTPUT", "none");
    }
    // insta fails a snapshot assertion by panicking; the comparison catches it and reports the
    // drift in the row, so those panics stay off the terminal. Every other panic is printed.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if !tapio_snapshots::is_snapshot_panic(message) {
            default_hook(info);
        }
    }));
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}
