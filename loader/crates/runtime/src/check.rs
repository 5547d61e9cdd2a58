//! `tapio-load check`: every planned program through the running kernel's verifier, unattached.
//!
//! Per program: accepted or rejected, the verified instruction count the kernel reports, the load
//! time; on rejection, the verifier log's tail and the instruction it stopped at. CI runs this on
//! every kernel of the matrix.

use aya::Btf;
use serde::Serialize;

use crate::monitors::{self, MonitorError, MonitorSpec};

/// One program's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramCheck {
    pub monitor: &'static str,
    pub program: &'static str,
    pub accepted: bool,
    /// Instructions the verifier processed (kernel 5.16+ reports it; None before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_insns: Option<u32>,
    pub load_us: u64,
    /// The rejection with its whole cause chain (the OS error included); a verifier rejection
    /// shows the log's tail here and the whole log in `verifier_log`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The OS error number of a rejection (EACCES from the verifier, EPERM for privilege, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// The verifier's whole log, for a verifier rejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verifier_log: Option<String>,
    /// An alternative path this kernel lacks (a kernel fact), so it was not loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The instruction index the verifier's last message points at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_insn: Option<u32>,
}

/// The last `N: (op) ...` instruction line of a verifier log: where it stopped.
pub fn failing_instruction(log: &str) -> Option<u32> {
    log.lines().rev().find_map(|l| {
        let (n, rest) = l.trim_start().split_once(": (")?;
        if rest.is_empty() {
            return None;
        }
        n.parse().ok()
    })
}

fn rejected(monitor: &'static str, program: &'static str, e: &MonitorError) -> ProgramCheck {
    let text = crate::errors::chain(e);
    ProgramCheck {
        monitor,
        program,
        accepted: false,
        verified_insns: None,
        load_us: 0,
        at_insn: failing_instruction(e.verifier_log().unwrap_or(&text)),
        error: Some(text),
        errno: e.errno(),
        verifier_log: e.verifier_log().map(str::to_owned),
        skipped: None,
    }
}

/// The xdp_filter program, which attaches to interfaces rather than running as a monitor.
pub fn check_xdp_filter(btf: Option<&Btf>) -> ProgramCheck {
    let started = std::time::Instant::now();
    let result = crate::monitors::xdp_filter::check_load(btf);
    let log = match &result {
        Err(crate::monitors::xdp_filter::XdpFilterError::Verifier { log, .. }) => Some(log.clone()),
        _ => None,
    };
    let error = result.as_ref().err().map(|e| crate::errors::chain(e));
    ProgramCheck {
        monitor: "xdp_filter",
        program: crate::monitors::xdp_filter::PROGRAM,
        accepted: result.is_ok(),
        verified_insns: result.as_ref().ok().copied().flatten(),
        load_us: started.elapsed().as_micros() as u64,
        at_insn: log.as_deref().or(error.as_deref()).and_then(failing_instruction),
        errno: result.as_ref().err().and_then(|e| crate::errors::errno(e)),
        error,
        verifier_log: log,
        skipped: None,
    }
}

/// Loads every program of `monitors` (not attaching), reporting each; nothing stays loaded.
pub fn check(monitors: &[&'static MonitorSpec], btf: Option<&Btf>) -> Vec<ProgramCheck> {
    // The alternative paths are looked up in tracefs (crate::plan::attach_path).
    if let Err(e) = crate::tracefs::ensure_mounted() {
        tracing::warn!("{e}");
    }
    let mut out = Vec::new();
    // With the source filter switched on (its maps empty): the ring build's `const volatile`
    // switch would otherwise let the verifier skip the filter's code as dead, and a program must
    // be accepted with every filter a configuration can turn on (probes/include/filter.bpf.h).
    let options = monitors::LoadOptions { filter: Some(crate::filter::KernelFilter::default()), ..Default::default() };
    for spec in monitors {
        let mut ebpf = match monitors::open(spec, btf, &options) {
            Ok(ebpf) => ebpf,
            Err(e) => {
                out.extend(spec.programs.iter().map(|p| rejected(spec.name, p.name, &e)));
                continue;
            }
        };
        for p in spec.programs {
            // An alternative path this kernel lacks is not a rejection: say why and move on.
            if monitors::group_of(spec.name, p.name).is_some() {
                if let Err(why) = crate::plan::attach_path(&p.attach) {
                    out.push(ProgramCheck {
                        monitor: spec.name,
                        program: p.name,
                        accepted: false,
                        verified_insns: None,
                        load_us: 0,
                        error: None,
                        errno: None,
                        verifier_log: None,
                        skipped: Some(why),
                        at_insn: None,
                    });
                    continue;
                }
            }
            match monitors::load_program(&mut ebpf, spec.name, p, btf) {
                Ok(took) => {
                    let verified_insns = ebpf
                        .program(p.name)
                        .and_then(|prog| prog.info().ok())
                        .and_then(|info| info.verified_instruction_count());
                    out.push(ProgramCheck {
                        monitor: spec.name,
                        program: p.name,
                        accepted: true,
                        verified_insns,
                        load_us: took.as_micros() as u64,
                        error: None,
                        errno: None,
                        verifier_log: None,
                        skipped: None,
                        at_insn: None,
                    });
                }
                Err(e) => out.push(rejected(spec.name, p.name, &e)),
            }
        }
    }
    out
}

/// The verdicts as a table.
pub fn render_text(results: &[ProgramCheck]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for r in results {
        let insns = r.verified_insns.map_or("-".to_owned(), |n| n.to_string());
        if let Some(why) = &r.skipped {
            let _ = writeln!(out, "{:<10} {:<24} skipped   {why}", r.monitor, r.program);
        } else if r.accepted {
            let _ = writeln!(out, "{:<10} {:<24} accepted  verified_insns={:<7} load={}us", r.monitor, r.program, insns, r.load_us);
        } else {
            let _ = writeln!(out, "{:<10} {:<24} REJECTED  {}", r.monitor, r.program, r.error.as_deref().unwrap_or(""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_instruction_the_verifier_stopped_at() {
        let log = "724: (07) r0 += 112\n728: (85) call bpf_probe_read_user#112\nR2 min value is negative\nprocessed 1517 insns";
        assert_eq!(failing_instruction(log), Some(728));
        assert_eq!(failing_instruction("no instructions here"), None);
    }
}
