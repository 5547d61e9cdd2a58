//! The results channel between the guest agent and the harness: one JSON object per line, each
//! a [`Line`]. The agent writes only `Line`s ([`Line::to_json`]); the harness reads each line back
//! with [`Line::parse`], and a line that is not exactly one of them (not JSON, an unknown kind, a
//! misspelt or missing field) is an error that fails the row, never a line silently dropped.
//!
//! This crate owns the protocol and nothing else: it depends on serde and on the kernel-feature
//! table's types (tapio-kernel-gates: data only) so the guest (a static binary inside the VM) and
//! the harness share the type without sharing anything heavier.
//!
//! Whatever cannot run names the kernel features it needs (`needs`), so the harness can judge,
//! against the kernel's version, config and probe answers, whether the kernel explains it.

use serde::{Deserialize, Serialize};
pub use tapio_kernel_gates::{Needs, ProbeAnswer};

/// Whether a program attached or is unavailable on this kernel (a kernel fact, with the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgramStatus {
    Attached,
    Unavailable,
}

/// One result line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Line {
    /// The running kernel: first line of every run.
    Kernel { release: String, version: String, btf: bool },
    /// One program of a loaded monitor: where it attached, or why it is unavailable.
    Program {
        monitor: String,
        program: String,
        status: ProgramStatus,
        /// The attach path, or the reason it is unavailable.
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transport: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        load_us: Option<u64>,
        /// For an unavailable program: the kernel features it needs (empty when attached).
        #[serde(default, skip_serializing_if = "Needs::is_empty")]
        needs: Needs,
    },
    /// A monitor that failed to load.
    Monitor { monitor: String, error: String, load_us: u64 },
    /// One program through the kernel's verifier, unattached.
    Verifier {
        monitor: String,
        program: String,
        accepted: bool,
        verified_insns: Option<u64>,
        load_us: Option<u64>,
        error: Option<String>,
        /// An alternative path the kernel lacks, not loaded (a kernel fact, not a rejection).
        skipped: Option<String>,
        /// For a skipped program: the kernel features it needs.
        #[serde(default, skip_serializing_if = "Needs::is_empty")]
        needs: Needs,
    },
    /// One named check.
    Check { name: String, pass: bool, detail: String },
    /// A check the kernel cannot run, with the kernel's reason and the features it needs:
    /// listed, never a pass.
    Skip {
        name: String,
        reason: String,
        #[serde(default, skip_serializing_if = "Needs::is_empty")]
        needs: Needs,
    },
    /// One kernel feature's probe answer (tapio-load `features`), as root.
    Feature { name: String, answer: ProbeAnswer },
    /// The normalised events of one (monitor, scenario), compared with `snapshots/`.
    Snapshot { monitor: String, scenario: String, body: String },
    /// Something the agent needed before the checks failed.
    Setup { error: String },
    /// Events one workload decoded, for the report.
    Events { monitor: String, count: u64 },
    /// The agent's last line: nothing after it was cut off.
    Done,
}

impl Line {
    /// The line as the agent writes it: one JSON object, no newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a Line always serialises")
    }

    /// Reads one line back; an error says what is wrong with it.
    pub fn parse(line: &str) -> Result<Self, String> {
        serde_json::from_str(line).map_err(|e| e.to_string())
    }

    /// A check line.
    pub fn check(name: impl Into<String>, pass: bool, detail: impl Into<String>) -> Self {
        Self::Check { name: name.into(), pass, detail: detail.into() }
    }

    /// A skip line: the check, why it cannot run, and the kernel features it needs.
    pub fn skip(name: impl Into<String>, reason: impl Into<String>, needs: Needs) -> Self {
        Self::Skip { name: name.into(), reason: reason.into(), needs }
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case::kernel(Line::Kernel { release: "6.1.0-50-cloud-amd64".into(), version: "#1 SMP".into(), btf: true })]
    #[case::attached_program(Line::Program {
        monitor: "process".into(),
        program: "process_exec".into(),
        status: ProgramStatus::Attached,
        path: "tracepoint:sched/sched_process_exec".into(),
        transport: Some("ringbuf".into()),
        load_us: Some(12),
        needs: Needs::default(),
    })]
    #[case::unavailable_program(Line::Program {
        monitor: "network".into(),
        program: "connect_attempt".into(),
        status: ProgramStatus::Unavailable,
        path: "fexit: refused".into(),
        transport: None,
        load_us: None,
        needs: Needs::any(&[&["fentry"], &["kprobe"]]),
    })]
    #[case::feature(Line::Feature { name: "fentry".into(), answer: ProbeAnswer::Refused { errno: 1, message: "m".into() } })]
    #[case::monitor(Line::Monitor { monitor: "dns".into(), error: "verifier says no".into(), load_us: 3 })]
    #[case::check(Line::check("process.leaf", false, "ppid 5"))]
    #[case::skip(Line::skip("fallback.kprobe", "no kprobes", Needs::one("kprobe")))]
    #[case::done(Line::Done)]
    fn every_line_round_trips(#[case] line: Line) {
        assert_eq!(Line::parse(&line.to_json()), Ok(line));
    }


    #[rstest]
    #[case::not_json("not json")]
    #[case::unknown_kind(r#"{"kind":"chekc","name":"x","pass":true,"detail":""}"#)]
    #[case::misspelt_field(r#"{"kind":"check","nmae":"x","pass":true,"detail":""}"#)]
    #[case::extra_field(r#"{"kind":"check","name":"x","pass":true,"detail":"","extra":1}"#)]
    #[case::missing_field(r#"{"kind":"check","name":"x","detail":""}"#)]
    #[case::no_kind(r#"{"name":"x","pass":true,"detail":""}"#)]
    #[case::unknown_status(r#"{"kind":"program","monitor":"m","program":"p","status":"maybe","path":""}"#)]
    fn unknown_kinds_misspelt_fields_and_garbage_are_errors(#[case] bad: &str) {
        assert!(Line::parse(bad).is_err(), "accepted: {bad}");
    }
}
