//! Reads what the guest agent sent on the results channel: one [`Line`] per line
//! (tapio-matrix-protocol, the type the agent writes them with).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tapio_kernel_gates::{judge, Judgement, KernelConfig, KernelFacts, KernelVersion, Needs, ProbeAnswer};
use tapio_matrix_protocol::{Line, ProgramStatus};

/// One program that attached, or one monitor that failed to load.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProgramResult {
    pub monitor: String,
    pub program: String,
    pub attached: bool,
    /// The attach path, or the error that stopped the monitor.
    pub detail: String,
    /// For an unavailable program: the kernel features it needs.
    #[serde(default, skip_serializing_if = "Needs::is_empty")]
    pub needs: Needs,
    /// For an unavailable program: whether the kernel explains it ([`GuestResults::explain`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judgement: Option<Judgement>,
}

/// A check the kernel cannot run: the reason the guest gave, the features it needs, and whether
/// the kernel explains it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SkipResult {
    pub name: String,
    pub detail: String,
    pub needs: Needs,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judgement: Option<Judgement>,
}

/// One named check and its verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckResult {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

/// One program's pass through the kernel's verifier (loaded, not attached).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifierResult {
    pub monitor: String,
    pub program: String,
    pub accepted: bool,
    /// Instructions the verifier processed (kernels 5.16+ report it).
    pub verified_insns: Option<u64>,
    pub error: Option<String>,
    /// An alternative path the kernel lacks, not loaded (a kernel fact, not a rejection).
    pub skipped: Option<String>,
    /// For a skipped program: the kernel features it needs.
    #[serde(default, skip_serializing_if = "Needs::is_empty")]
    pub needs: Needs,
    /// For a skipped program: whether the kernel explains it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judgement: Option<Judgement>,
}

/// A normalised event list the guest produced for one (monitor, scenario) snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotBody {
    pub monitor: String,
    pub scenario: String,
    pub body: String,
}

/// Everything one guest (or the host row) reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GuestResults {
    pub release: Option<String>,
    pub btf: Option<bool>,
    pub programs: Vec<ProgramResult>,
    /// Programs the kernel cannot attach (a kernel fact, with the reason): not failures.
    pub unavailable: Vec<ProgramResult>,
    pub verifier: Vec<VerifierResult>,
    pub checks: Vec<CheckResult>,
    pub snapshots: Vec<SnapshotBody>,
    /// Checks the kernel cannot run: listed, never counted as passed, and failing the row unless
    /// the kernel explains them.
    pub skips: Vec<SkipResult>,
    /// The kernel's feature probes as the agent (root) ran them.
    pub features: BTreeMap<String, ProbeAnswer>,
    /// The kernel's config, which the harness reads (the package's `config-<release>`, or the
    /// host's `/proc/config.gz`); not the agent's to say.
    #[serde(skip)]
    pub config: Option<KernelConfig>,
    /// The kernel's architecture, set by the harness from the row ([`GuestResults::set_arch`]).
    #[serde(skip)]
    pub arch: Option<tapio_kernel_gates::Arch>,
    /// Where [`GuestResults::config`] came from, or why there is none.
    pub config_source: Option<String>,
    pub setup_errors: Vec<String>,
    pub events: u64,
    /// The agent reached its last line: nothing was cut off.
    pub done: bool,
    /// Lines that are not a protocol [`Line`] (not JSON, an unknown kind, a misspelt or missing
    /// field), each with what is wrong with it: they fail the row, so a misspelt check can never
    /// vanish.
    pub malformed: Vec<String>,
}

impl GuestResults {
    /// The facts the skip judge reads: the release's version, the config, the probe answers.
    pub fn facts(&self) -> KernelFacts {
        KernelFacts {
            running: self.release.as_deref().and_then(KernelVersion::parse),
            arch: self.arch,
            config: self.config.clone(),
            probes: self.features.clone(),
        }
    }

    /// Sets the kernel's architecture for the judge (a feature may come later to arm64).
    pub fn set_arch(&mut self, arch: tapio_kernel_gates::Arch) {
        self.arch = Some(arch);
    }

    /// Sets the kernel's config (or why there is none) for the judge.
    pub fn set_config(&mut self, config: Result<KernelConfig, String>) {
        match config {
            Ok(c) => {
                self.config_source = Some(c.source.clone());
                self.config = Some(c);
            }
            Err(why) => {
                self.config_source = Some(format!("none: {why}"));
                self.config = None;
            }
        }
    }

    /// Everything that did not run for want of a kernel feature, each named, with its needs:
    /// unavailable programs, skipped checks, programs the verifier pass skipped.
    pub fn not_run(&self) -> Vec<(String, &Needs)> {
        let mut out = Vec::new();
        for u in &self.unavailable {
            out.push((format!("{}/{} unavailable", u.monitor, u.program), &u.needs));
        }
        for v in self.verifier.iter().filter(|v| v.skipped.is_some()) {
            out.push((format!("verifier skipped {}/{}", v.monitor, v.program), &v.needs));
        }
        for s in &self.skips {
            out.push((format!("SKIP {}", s.name), &s.needs));
        }
        out
    }

    /// Judges every unavailable program, skipped check and skipped verifier program against
    /// this kernel's facts and records the judgement on each, for the report.
    pub fn explain(&mut self) {
        let facts = self.facts();
        for u in &mut self.unavailable {
            u.judgement = Some(judge(&u.needs, &facts));
        }
        for v in self.verifier.iter_mut().filter(|v| v.skipped.is_some()) {
            v.judgement = Some(judge(&v.needs, &facts));
        }
        for s in &mut self.skips {
            s.judgement = Some(judge(&s.needs, &facts));
        }
    }
}

/// Parses the results lines; a line that is not a protocol [`Line`] is kept in `malformed` with
/// the reason (blank lines aside).
pub fn parse(lines: &[String]) -> GuestResults {
    let mut r = GuestResults::default();
    for (n, line) in lines.iter().map(|l| l.trim()).enumerate().filter(|(_, l)| !l.is_empty()) {
        let line = match Line::parse(line) {
            Ok(l) => l,
            Err(why) => {
                r.malformed.push(format!("results line {}: {why}: {line}", n + 1));
                continue;
            }
        };
        match line {
            Line::Kernel { release, btf, .. } => {
                r.release = Some(release);
                r.btf = Some(btf);
            }
            Line::Program { monitor, program, status: ProgramStatus::Unavailable, path, needs, .. } => r
                .unavailable
                .push(ProgramResult { monitor, program, attached: false, detail: path, needs, judgement: None }),
            Line::Program { monitor, program, status: ProgramStatus::Attached, path, .. } => r.programs.push(ProgramResult {
                monitor,
                program,
                attached: true,
                detail: path,
                needs: Needs::default(),
                judgement: None,
            }),
            Line::Monitor { monitor, error, .. } => r.programs.push(ProgramResult {
                monitor,
                program: "*".to_owned(),
                attached: false,
                detail: error,
                needs: Needs::default(),
                judgement: None,
            }),
            Line::Verifier { monitor, program, accepted, verified_insns, error, skipped, needs, .. } => r
                .verifier
                .push(VerifierResult { monitor, program, accepted, verified_insns, error, skipped, needs, judgement: None }),
            Line::Check { name, pass, detail } => r.checks.push(CheckResult { name, pass, detail }),
            Line::Snapshot { monitor, scenario, body } => r.snapshots.push(SnapshotBody { monitor, scenario, body }),
            Line::Skip { name, reason, needs } => r.skips.push(SkipResult { name, detail: reason, needs, judgement: None }),
            Line::Feature { name, answer } => {
                r.features.insert(name, answer);
            }
            Line::Setup { error } => r.setup_errors.push(error),
            Line::Events { count, .. } => r.events += count,
            Line::Done => r.done = true,
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_agent_lines_and_keeps_malformed_ones() {
        let lines: Vec<String> = [
            r#"{"kind":"kernel","release":"6.1.0-50-cloud-amd64","version":"1 SMP","btf":true}"#,
            r#"{"kind":"program","monitor":"process","program":"process_exec","status":"attached","path":"tracepoint:sched/sched_process_exec"}"#,
            r#"{"kind":"monitor","monitor":"dns","error":"verifier says no","load_us":3}"#,
            r#"{"kind":"check","name":"process.leaf","pass":false,"detail":"ppid 5"}"#,
            "not json",
            r#"{"kind":"chekc","name":"process.exit","pass":true,"detail":""}"#,
            r#"{"kind":"done"}"#,
        ]
        .map(str::to_owned)
        .to_vec();
        let r = parse(&lines);
        assert_eq!(r.release.as_deref(), Some("6.1.0-50-cloud-amd64"));
        assert_eq!(r.programs.len(), 2);
        assert!(r.programs[0].attached && !r.programs[1].attached);
        assert!(!r.checks[0].pass);
        assert_eq!(r.malformed.len(), 2, "{:?}", r.malformed);
        assert!(r.malformed[0].starts_with("results line 5: ") && r.malformed[0].ends_with(": not json"), "{}", r.malformed[0]);
        assert!(r.malformed[1].contains("unknown variant `chekc`"), "{}", r.malformed[1]);
        assert!(r.done);
    }
}
