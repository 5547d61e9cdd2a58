//! The checks the guest runs on its kernel: the feature probes, the verifier pass, load and attach
//! every monitor, then every scenario of tapio-scenarios (`SCENARIOS`), then the fallbacks.

use std::time::Instant;

use tapio_matrix_protocol::{Line, ProgramStatus};
use tapio_runtime::monitors::{self, LoadOptions, LoadedMonitor};
use tapio_features::{privileges, tracefs};

use crate::report::Reporter;

pub fn run_all(out: &mut Reporter) {
    privileges::raise_memlock();
    if let Err(e) = tracefs::ensure_mounted() {
        out.line(&Line::Setup { error: e.to_string() });
    }
    // The agent's message for a kernel without BTF (tapio-load's `run::load_btf`), word for word.
    let btf = match aya::Btf::from_sys_fs() {
        Ok(btf) => Some(btf),
        Err(e) => {
            let error = format!("btf: no kernel BTF at /sys/kernel/btf/vmlinux ({e}); pass --btf FILE with this kernel's BTF");
            out.line(&Line::Setup { error });
            None
        }
    };
    // Every feature probe's answer, as root: the facts (with the kernel's version and config)
    // the harness judges each skip and unavailable program by.
    for f in tapio_features::features::probe_all() {
        out.line(&Line::Feature { name: f.name.to_owned(), answer: f.status.answer() });
    }
    // The verifier pass first: every program loaded unattached, as `tapio-load check` does.
    let all: Vec<_> = monitors::MONITORS.iter().collect();
    crate::faults::rejected_fixture_if_asked(out, btf.as_ref());
    let mut verdicts = tapio_runtime::check::check(&all, btf.as_ref());
    verdicts.push(tapio_runtime::check::check_xdp_filter(btf.as_ref()));
    for c in verdicts {
        let needs = match (&c.skipped, monitors::monitor(c.monitor)) {
            (Some(_), Some(spec)) => monitors::needs_of(spec, c.program),
            _ => Default::default(),
        };
        out.line(&Line::Verifier {
            monitor: c.monitor.to_owned(),
            program: c.program.to_owned(),
            accepted: c.accepted,
            verified_insns: c.verified_insns.map(u64::from),
            load_us: Some(c.load_us),
            error: c.error,
            skipped: c.skipped,
            needs,
        });
    }
    let mut loaded: Vec<LoadedMonitor> = Vec::new();
    for spec in monitors::MONITORS {
        let started = Instant::now();
        match monitors::load(spec, btf.as_ref(), &LoadOptions::default()) {
            Ok(m) => {
                for r in &m.reports {
                    out.line(&Line::Program {
                        monitor: r.monitor.to_owned(),
                        program: r.program.to_owned(),
                        status: ProgramStatus::Attached,
                        path: r.path.clone(),
                        transport: Some(m.transport.to_string()),
                        load_us: Some(r.load_time.as_micros() as u64),
                        needs: Default::default(),
                    });
                }
                for (program, why) in &m.unavailable {
                    out.line(&Line::Program {
                        monitor: m.spec.name.to_owned(),
                        program: (*program).to_owned(),
                        status: ProgramStatus::Unavailable,
                        path: why.clone(),
                        transport: None,
                        load_us: None,
                        needs: monitors::needs_of(m.spec, program),
                    });
                }
                loaded.push(m);
            }
            Err(e) => out.line(&Line::Monitor {
                monitor: spec.name.to_owned(),
                error: e.to_string(),
                load_us: started.elapsed().as_micros() as u64,
            }),
        }
    }
    for scenario in tapio_scenarios::SCENARIOS {
        for line in scenario.run(&mut loaded).into_lines() {
            out.line(&line);
        }
    }
    // Drop the attached monitors first: the fallback checks load their own copies.
    drop(loaded);
    crate::fallbacks::perf_transport(out, btf.as_ref());
    crate::fallbacks::perf_dns(out, btf.as_ref());
    crate::fallbacks::kprobe_capability(out, btf.as_ref());
    crate::fallbacks::kprobe_network(out, btf.as_ref());
}

/// Runs the one scenario called `name` with only its monitors loaded, as the host tests do
/// (tests/scenarios.rs). Exit status 2 for a name no scenario has; the checks' verdicts are in
/// the lines.
pub fn run_one(out: &mut Reporter, name: &str) -> std::process::ExitCode {
    let Some(scenario) = tapio_scenarios::scenario(name) else {
        out.line(&Line::Setup { error: format!("no scenario {name:?}") });
        return std::process::ExitCode::from(2);
    };
    privileges::raise_memlock();
    if let Err(e) = tracefs::ensure_mounted() {
        out.line(&Line::Setup { error: e.to_string() });
    }
    let btf = match aya::Btf::from_sys_fs() {
        Ok(btf) => Some(btf),
        Err(e) => {
            out.line(&Line::Setup { error: format!("btf: no kernel BTF at /sys/kernel/btf/vmlinux ({e})") });
            None
        }
    };
    let mut loaded: Vec<LoadedMonitor> = Vec::new();
    for spec in monitors::MONITORS.iter().filter(|s| scenario.monitors().contains(&s.name)) {
        let started = Instant::now();
        match monitors::load(spec, btf.as_ref(), &LoadOptions::default()) {
            Ok(m) => loaded.push(m),
            Err(e) => out.line(&Line::Monitor {
                monitor: spec.name.to_owned(),
                error: e.to_string(),
                load_us: started.elapsed().as_micros() as u64,
            }),
        }
    }
    for line in scenario.run(&mut loaded).into_lines() {
        out.line(&line);
    }
    std::process::ExitCode::SUCCESS
}
