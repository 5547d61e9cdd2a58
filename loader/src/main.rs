//! The `tapio-load` command line.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tapio_load::{
    bundle,
    events::DecodeOptions,
    inspect,
    monitors::{self, LoadOptions},
    run::{self, RunOptions},
};

#[derive(Parser)]
#[command(name = "tapio-load", version, about = "Load the tapio-probes eBPF monitors on this kernel")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Load and attach monitors, print their events until SIGINT or SIGTERM.
    Run {
        /// Comma-separated monitors to run.
        #[arg(long, value_delimiter = ',', default_value = "process")]
        monitors: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "json")]
        output: OutputFormat,
        /// Write events to this file instead of stdout.
        #[arg(long)]
        output_file: Option<PathBuf>,
        /// BTF file to relocate against instead of /sys/kernel/btf/vmlinux.
        #[arg(long)]
        btf: Option<PathBuf>,
        /// At most this many argv entries per exec event (more sets argv_truncated).
        #[arg(long, default_value_t = 32)]
        argv_max: usize,
        /// Milliseconds a dns query waits for its response before a `timeout` event.
        #[arg(long, default_value_t = 5000)]
        dns_timeout_ms: u64,
        /// Ring buffer size in bytes (power of two, page multiple).
        #[arg(long)]
        ring_size: Option<u32>,
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
    },
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

fn cmd_inspect(json: bool, objects: &[PathBuf]) -> Result<()> {
    let infos = if objects.is_empty() {
        bundle::OBJECTS
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

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { monitors, output: OutputFormat::Json, output_file, btf, argv_max, dns_timeout_ms, ring_size } => {
            let monitors = resolve_monitors(&monitors)?;
            if argv_max == 0 {
                bail!("--argv-max must be at least 1");
            }
            cmd_run(RunOptions {
                monitors,
                btf,
                output_file,
                decode: DecodeOptions { argv_max, dns_timeout: std::time::Duration::from_millis(dns_timeout_ms) },
                load: LoadOptions { ring_size },
            })
        }
        Command::Inspect { json, objects } => cmd_inspect(json, &objects),
        Command::Features { json } => {
            let features = tapio_load::features::probe_all();
            if json {
                println!("{}", serde_json::to_string_pretty(&features)?);
            } else {
                print!("{}", tapio_load::features::render_text(&features));
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TAPIO_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line (plus any verifier log the error carries), never a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
