//! The `tapio-load` command line.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tapio_bundle as bundle;
use tapio_load::{logging::LogFormat, run::{self, RunOptions}};
use tapio_decode::events::DecodeOptions;
use tapio_object::inspect;
use tapio_runtime::monitors::{self, LoadOptions};

#[derive(Parser)]
#[command(name = "tapio-load", version, about = "Load the tapio-probes eBPF monitors on this kernel")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Diagnostics on stderr: `text` or `json` (one object per line, structured fields)
    /// [env: TAPIO_LOG_FORMAT; default: text].
    #[arg(long, global = true)]
    log_format: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Ringbuf,
    Perf,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Json,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate a configuration file (with TAPIO_<KEY> overrides) without loading anything.
    Check { file: PathBuf },
    /// Print the configuration reference as Markdown (docs/operations.md holds this output).
    Reference,
}

#[derive(Subcommand)]
enum Command {
    /// Load and attach monitors, print their events until SIGINT or SIGTERM.
    Run {
        /// TOML configuration file (see `tapio-load config reference`); flags and TAPIO_<KEY>
        /// environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Comma-separated monitors to run [default: process].
        #[arg(long, value_delimiter = ',')]
        monitors: Option<Vec<String>>,
        /// Output format.
        #[arg(long, value_enum, default_value = "json")]
        output: OutputFormat,
        /// Write events to this file instead of stdout.
        #[arg(long)]
        output_file: Option<PathBuf>,
        /// BTF file to relocate against instead of /sys/kernel/btf/vmlinux.
        #[arg(long)]
        btf: Option<PathBuf>,
        /// Directory of `<uname -r>.btf` files, used when the kernel has no BTF.
        #[arg(long)]
        btf_dir: Option<PathBuf>,
        /// At most this many argv entries per exec event (more sets argv_truncated) [default: 32].
        #[arg(long)]
        argv_max: Option<i64>,
        /// Milliseconds a dns query waits for its response before a `timeout` event [default: 5000].
        #[arg(long)]
        dns_timeout_ms: Option<i64>,
        /// Comma-separated ports the dns monitor parses [default: 53].
        #[arg(long, value_delimiter = ',')]
        dns_ports: Option<Vec<i64>>,
        /// Ring buffer size in bytes (power of two, page multiple).
        #[arg(long)]
        ring_size: Option<i64>,
        /// Prometheus endpoint address, or `off` [default: 127.0.0.1:9464].
        #[arg(long)]
        metrics_address: Option<String>,
        /// Event transport: `ringbuf` (5.8+) or `perf` (4.4+) [default: the best this kernel has].
        #[arg(long, value_enum, alias = "force-transport")]
        transport: Option<TransportArg>,
        /// When records wake the reader: `batched` or `immediate` [default: batched].
        #[arg(long)]
        delivery: Option<String>,
        /// Longest wait of the reader's drain timer, in ms: the delivery bound [default: 10].
        #[arg(long)]
        delivery_bound_ms: Option<i64>,
        /// Pin links and maps under this bpffs directory so they survive the loader, or adopt
        /// the ones pinned there by a previous run (see `unpin`).
        #[arg(long)]
        pin_path: Option<PathBuf>,
        /// Stop (exit 1) when any monitor fails to load or attach, instead of running the
        /// others and reporting the failure [config: strict].
        #[arg(long)]
        strict: bool,
    },
    /// Remove the links and maps pinned by `run --pin-path`, which detaches those programs.
    Unpin {
        #[arg(long)]
        pin_path: PathBuf,
    },
    /// Validate or document the configuration file.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Show, for the running kernel, the attach path of every program or why it has none.
    Plan {
        /// Comma-separated monitors (default: all).
        #[arg(long, value_delimiter = ',')]
        monitors: Vec<String>,
        /// BTF file to relocate against instead of the kernel's own.
        #[arg(long)]
        btf: Option<PathBuf>,
        /// Directory of `<uname -r>.btf` files, used when the kernel has no BTF.
        #[arg(long)]
        btf_dir: Option<PathBuf>,
        /// The `run` configuration file whose delivery policy to report (with TAPIO_<KEY>
        /// overrides and the flags below).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Delivery policy to report, as `run --delivery` [default: batched].
        #[arg(long)]
        delivery: Option<String>,
        /// Delivery bound to report, as `run --delivery-bound-ms` [default: 10].
        #[arg(long)]
        delivery_bound_ms: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// Load every planned program into the kernel's verifier without attaching; report verdicts.
    Check {
        /// Comma-separated monitors (default: all).
        #[arg(long, value_delimiter = ',')]
        monitors: Vec<String>,
        #[arg(long)]
        btf: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Probe every kernel feature gate on the running kernel by a real attempt.
    Features {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Describe the embedded objects (or given object files) without loading anything.
    Inspect {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Inspect these object files instead of the embedded bundle.
        #[arg(long = "object")]
        objects: Vec<PathBuf>,
        /// The architecture whose bundle to inspect (x86_64, arm64; default: this binary's).
        /// Another architecture's bundle is embedded only in a build with `--features all-arches`.
        #[arg(long, value_parser = parse_arch, conflicts_with = "objects")]
        arch: Option<bundle::Arch>,
    },
    /// The XDP prefix filter: attach to an interface, print periodic `stats` records.
    Xdp {
        #[command(subcommand)]
        action: XdpCommand,
    },
    /// Offline: what the objects meant for a kernel use that the kernel lacks (exit 1 if any).
    Lint {
        /// Oldest kernel to support, e.g. 4.19 (picks the variants meant for it).
        #[arg(long)]
        min_kernel: String,
        #[arg(long)]
        json: bool,
        /// Lint these object files instead of the bundle's variants for that kernel.
        #[arg(long = "object")]
        objects: Vec<PathBuf>,
        /// The architecture the objects are for: its bundle (default: this binary's), or, with
        /// `--object`, the architecture every file must be built for.
        #[arg(long, value_parser = parse_arch)]
        arch: Option<bundle::Arch>,
    },
    /// Work with BTF files for kernels that have none.
    Btf {
        #[command(subcommand)]
        action: BtfAction,
    },
}

/// `tapio-load xdp` subcommands.
#[derive(Debug, clap::Subcommand)]
enum XdpCommand {
    /// Attach the filter to an interface and print `stats` records until SIGINT or SIGTERM.
    Attach(AttachArgs),
}

/// Arguments of `tapio-load xdp attach` (tapio-runtime's `monitors::xdp_filter::AttachArgs`).
#[derive(Debug, Clone, clap::Args)]
struct AttachArgs {
    /// The interface to filter (native XDP where the driver allows, generic otherwise).
    #[arg(long)]
    iface: String,
    /// A prefix to drop (`10.0.0.0/8`, `fd00::/8`, or one address); repeat for more.
    #[arg(long = "block")]
    blocks: Vec<monitors::xdp_filter::Prefix>,
    /// Which addresses a blocklist applies to.
    #[arg(long = "match", value_enum, default_value = "both")]
    match_mode: MatchMode,
    /// Steer passed IP packets across the first N online CPUs through the CPU map.
    #[arg(long)]
    steer_cpus: Option<u32>,
    /// Milliseconds between `stats` records.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    interval_ms: u64,
}

/// Which packet addresses are looked up in the blocklists (`monitors::xdp_filter::MatchMode`).
#[derive(Debug, Clone, Copy, ValueEnum)]
enum MatchMode {
    /// Source address only (traffic from a blocked prefix).
    Src,
    /// Destination address only (traffic to a blocked prefix).
    Dst,
    /// Either address: a blocklisted prefix is cut off in both directions.
    Both,
}

impl From<AttachArgs> for monitors::xdp_filter::AttachArgs {
    fn from(a: AttachArgs) -> Self {
        use monitors::xdp_filter::MatchMode as M;
        let match_mode = match a.match_mode {
            MatchMode::Src => M::Src,
            MatchMode::Dst => M::Dst,
            MatchMode::Both => M::Both,
        };
        Self { iface: a.iface, blocks: a.blocks, match_mode, steer_cpus: a.steer_cpus, interval_ms: a.interval_ms }
    }
}

#[derive(Subcommand)]
enum BtfAction {
    /// Write the minimal BTF the bundle's CO-RE relocations need (like `bpftool gen min_core_btf`).
    Minimize {
        /// The full BTF of the target kernel (e.g. its /sys/kernel/btf/vmlinux).
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Minimize for these object files instead of every object of the bundle.
        #[arg(long = "object")]
        objects: Vec<PathBuf>,
        /// The target kernel's architecture, whose bundle to minimize for (default: this
        /// binary's). Its register types differ (arm64's kprobes read `user_pt_regs`), so a BTF
        /// minimized for the other bundle lacks them.
        #[arg(long, value_parser = parse_arch, conflicts_with = "objects")]
        arch: Option<bundle::Arch>,
    },
}

/// Reads `--object` files, or takes every embedded object when none is given.
fn objects_or_bundle(paths: &[PathBuf], bundle_objects: &[&'static bundle::EmbeddedObject]) -> Result<Vec<(String, Vec<u8>)>> {
    if paths.is_empty() {
        return Ok(bundle_objects.iter().map(|o| (o.file.to_owned(), o.bytes.to_vec())).collect());
    }
    paths
        .iter()
        .map(|p| Ok((p.display().to_string(), std::fs::read(p).with_context(|| format!("read {}", p.display()))?)))
        .collect()
}

fn resolve_monitors(names: &[String]) -> Result<Vec<&'static monitors::MonitorSpec>> {
    names
        .iter()
        .map(|name| {
            monitors::monitor(name).with_context(|| {
                let known: Vec<_> = monitors::MONITORS.iter().map(|m| m.name).collect();
                format!("unknown monitor `{name}` (known: {})", known.join(", "))
            })
        })
        .collect()
}

/// The named monitors, or every monitor when none is named.
fn all_or(names: &[String]) -> Result<Vec<&'static monitors::MonitorSpec>> {
    if names.is_empty() {
        Ok(monitors::MONITORS.iter().collect())
    } else {
        resolve_monitors(names)
    }
}

/// `--arch`: an architecture by any of its names (`arm64`, `aarch64`, `x86_64`, `amd64`).
fn parse_arch(s: &str) -> Result<bundle::Arch, String> {
    s.parse().map_err(|e: tapio_kernel_gates::UnknownArch| e.to_string())
}

/// The embedded bundle of `arch`, or why this binary has none.
fn bundle_of(arch: bundle::Arch) -> Result<&'static [bundle::EmbeddedObject]> {
    bundle::objects_for(arch).with_context(|| {
        format!("no {arch} bundle in this {} build (build tapio-load with `--features all-arches`)", bundle::Arch::TARGET)
    })
}

fn cmd_inspect(json: bool, objects: &[PathBuf], arch: Option<bundle::Arch>) -> Result<()> {
    let infos = if objects.is_empty() {
        bundle_of(arch.unwrap_or(bundle::Arch::TARGET))?
            .iter()
            .map(|o| inspect::inspect(o.file, o.bytes))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        objects
            .iter()
            .map(|path| {
                let bytes = std::fs::read(path).with_context(|| format!("inspect {}: read", path.display()))?;
                Ok(inspect::inspect(&path.display().to_string(), &bytes)?)
            })
            .collect::<Result<Vec<_>>>()?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
    } else {
        print!("{}", inspect::render_text(&infos));
    }
    Ok(())
}

fn cmd_run(options: RunOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start async runtime")?;
    runtime.block_on(run::run(options))?;
    Ok(())
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            config,
            monitors,
            output: OutputFormat::Json,
            output_file,
            btf,
            btf_dir,
            argv_max,
            dns_timeout_ms,
            dns_ports,
            ring_size,
            metrics_address,
            transport,
            delivery,
            delivery_bound_ms,
            pin_path,
            strict,
        } => {
            let flags = tapio_load::config::Partial {
                delivery,
                delivery_bound_ms,
                monitors,
                output: output_file.map(|p| p.display().to_string()),
                btf,
                btf_dir,
                argv_max,
                dns_timeout_ms,
                dns_ports,
                ring_size,
                metrics_address,
                pin_path,
                strict: strict.then_some(true),
                ..Default::default()
            };
            let overrides = tapio_load::config::from_env(std::env::vars())?.merge(flags);
            let file = config.as_deref().map(tapio_load::config::read_file).transpose()?.unwrap_or_default();
            let c = tapio_load::config::Config::from_partial(file.merge(overrides.clone()))?;
            cmd_run(RunOptions {
                btf: c.btf_path(&tapio_runtime::plan::kernel_release()),
                sinks: c.sinks.clone(),
                decode: DecodeOptions { argv_max: c.argv_max, dns_timeout: std::time::Duration::from_millis(c.dns_timeout_ms) },
                load: LoadOptions {
                    ring_size: c.ring_size,
                    delivery: c.delivery,
                    advanced: tapio_load::config::advanced_options(&c),
                    transport: transport.map(|t| match t {
                        TransportArg::Ringbuf => tapio_bundle::Transport::Ringbuf,
                        TransportArg::Perf => tapio_bundle::Transport::Perf,
                    }),
                    in_container_fallback: c.in_container_fallback,
                    filter: None, // decided by the run from `filters`
                },
                filters: c.filters.clone(),
                metrics: c.metrics_address.map(|address| tapio_load::output::metrics::MetricsOptions {
                    address,
                    required: c.metrics_address_explicit,
                }),
                dns_ports: c.dns_ports.clone(),
                reload: config.map(|file| tapio_load::config::Reload { file, overrides }),
                pin_path: c.pin_path.clone(),
                strict: c.strict,
                attribution: Some(tapio_decode::attribution::DEFAULT_CAPACITY),
                cri_socket: match &c.cri_socket {
                    tapio_load::config::CriSocket::Probe => tapio_cri::probe_socket(),
                    tapio_load::config::CriSocket::Off => None,
                    tapio_load::config::CriSocket::Path(p) => Some(p.clone()),
                },
                monitors: c.monitors,
            })
        }
        Command::Config { action: ConfigAction::Check { file } } => {
            tapio_load::config::resolve(Some(&file), std::env::vars(), Default::default())?;
            println!("ok");
            Ok(())
        }
        Command::Config { action: ConfigAction::Reference } => {
            print!("{}", tapio_load::config::reference_markdown());
            Ok(())
        }
        Command::Inspect { json, objects, arch } => cmd_inspect(json, &objects, arch),
        Command::Unpin { pin_path } => {
            for dir in tapio_runtime::pin::unpin(&pin_path)? {
                println!("unpinned {}", dir.display());
            }
            Ok(())
        }
        Command::Xdp { action: XdpCommand::Attach(args) } => {
            let args = tapio_runtime::monitors::xdp_filter::AttachArgs::from(args);
            tapio_features::privileges::check()?;
            tapio_features::privileges::raise_memlock();
            let mut stdout = std::io::stdout().lock();
            tapio_runtime::monitors::xdp_filter::run_attach(&args, None, &mut stdout, |mode| {
                tracing::info!("xdp: attached to {} in {mode} mode", args.iface)
            })?;
            Ok(())
        }
        Command::Lint { min_kernel, json, objects, arch } => {
            let min = tapio_object::lint::KernelVersion::parse(&min_kernel)?;
            // The bundle's objects are meant for its architecture; files only when --arch says so.
            let (bundle_objects, expected) = if objects.is_empty() {
                let arch = arch.unwrap_or(bundle::Arch::TARGET);
                bundle_of(arch)?;
                (tapio_runtime::lint::bundle_objects_for(min, arch)?, Some(arch))
            } else {
                (Vec::new(), arch)
            };
            let inputs = objects_or_bundle(&objects, &bundle_objects)?;
            let refs: Vec<(String, &[u8])> = inputs.iter().map(|(f, b)| (f.clone(), b.as_slice())).collect();
            let report = tapio_object::lint::lint(&refs, min, expected)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", tapio_object::lint::render_text(&report));
            }
            if report.failed() {
                bail!(
                    "lint: {} features missing on {min}, {} objects not built for their architecture",
                    report.missing(),
                    report.arch_problems.len()
                );
            }
            Ok(())
        }
        Command::Btf { action: BtfAction::Minimize { from, out, objects, arch } } => {
            let all: Vec<_> = if objects.is_empty() {
                bundle_of(arch.unwrap_or(bundle::Arch::TARGET))?.iter().collect()
            } else {
                Vec::new()
            };
            let inputs = objects_or_bundle(&objects, &all)?;
            let refs: Vec<_> = inputs
                .iter()
                .map(|(file, bytes)| tapio_object::btf_minimize::ObjectInput { file, bytes })
                .collect();
            let m = tapio_object::btf_minimize::minimize_file(&from, &out, &refs)?;
            println!(
                "{}: {} bytes, {} of {} types, for {} CO-RE relocations ({} without a match in {})",
                out.display(),
                m.bytes.len(),
                m.types_kept,
                m.types_total,
                m.relocations,
                m.unmatched,
                from.display()
            );
            Ok(())
        }
        Command::Plan { monitors, btf, btf_dir, config, delivery, delivery_bound_ms, json } => {
            let monitors = all_or(&monitors)?;
            let source = tapio_runtime::plan::btf_source(btf.as_deref(), btf_dir.as_deref(), &tapio_runtime::plan::kernel_release());
            let flags = tapio_load::config::Partial { delivery, delivery_bound_ms, ..Default::default() };
            let delivery = tapio_load::config::resolve(config.as_deref(), std::env::vars(), flags)?.delivery;
            let _ = tapio_features::tracefs::ensure_mounted();
            let plan = tapio_runtime::plan::plan(&monitors, &source, delivery);
            if json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{}", tapio_runtime::plan::render_text(&plan));
            }
            Ok(())
        }
        Command::Check { monitors, btf, json } => {
            let all_monitors = monitors.is_empty();
            let monitors = all_or(&monitors)?;
            tapio_features::privileges::check()?;
            tapio_features::privileges::raise_memlock();
            let btf = tapio_load::run::load_btf(btf.as_ref())?;
            let mut results = tapio_runtime::check::check(&monitors, Some(&btf));
            if all_monitors {
                results.push(tapio_runtime::check::check_xdp_filter(Some(&btf)));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                print!("{}", tapio_runtime::check::render_text(&results));
            }
            let rejected = results.iter().filter(|r| !r.accepted && r.skipped.is_none()).count();
            if rejected > 0 {
                bail!("check: {rejected} of {} programs rejected by this kernel's verifier", results.len());
            }
            Ok(())
        }
        Command::Features { json } => {
            let features = tapio_features::features::probe_all();
            if json {
                println!("{}", serde_json::to_string_pretty(&features)?);
            } else {
                print!("{}", tapio_features::features::render_text(&features));
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so `tapio-load inspect | head` would panic in println!. Restore the
    // default: a closed reader ends the process quietly, and the kernel frees everything it held
    // (pins, when asked for, stay by design).
    // SAFETY: signal() with SIG_DFL installs no handler code; called before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let format = cli.log_format.clone().or_else(|| std::env::var("TAPIO_LOG_FORMAT").ok());
    let format = match format.as_deref().map(str::parse::<LogFormat>).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: --log-format: {e}");
            return ExitCode::FAILURE;
        }
    };
    tapio_load::logging::init(
        format,
        tracing_subscriber::EnvFilter::try_from_env("TAPIO_LOG").unwrap_or_else(|_| "info".into()),
    );
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line (plus any verifier log the error carries) with every cause once, the OS
            // error included; never a backtrace. In JSON, one object with the errno as a field.
            let e: &(dyn std::error::Error + 'static) = e.as_ref();
            match format {
                LogFormat::Text => eprintln!("error: {}", tapio_runtime::errors::chain(e)),
                LogFormat::Json => tracing::error!(errno = tapio_runtime::errors::errno(e), "error: {}", tapio_runtime::errors::chain(e)),
            }
            ExitCode::FAILURE
        }
    }
}
