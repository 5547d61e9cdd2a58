//! Reads what the guest agent sent on the results channel: one [`Line`] per line
//! (tapio-matrix-protocol, the type the agent writes them with).

use serde::Serialize;
use tapio_matrix_protocol::{Line, ProgramStatus};

/// One program that attached, or one monitor that failed to load.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProgramResult {
    pub monitor: String,
    pub program: String,
    pub attached: bool,
    /// The attach path, or the error that stopped the monitor.
    pub detail: String,
}

/// One named check and its verdict.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckResult {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

/// One program's pass through the kernel's verifier (loaded, not attached).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerifierResult {
    pub monitor: String,
    pub program: String,
    pub accepted: bool,
    /// Instructions the verifier processed (kernels 5.16+ report it).
    pub verified_insns: Option<u64>,
    pub error: Option<String>,
    /// An alternative path the kernel lacks, not loaded (a kernel fact, not a rejection).
    pub skipped: Option<String>,
}

/// A normalised event list the guest produced for one (monitor, scenario) snapshot.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnapshotBody {
    pub monitor: String,
    pub scenario: String,
    pub body: String,
}

/// Everything one guest (or the host row) reported.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GuestResults {
    pub release: Option<String>,
    pub btf: Option<bool>,
    pub programs: Vec<ProgramResult>,
    /// Programs the kernel cannot attach (a kernel fact, with the reason): not failures.
    pub unavailable: Vec<ProgramResult>,
    pub verifier: Vec<VerifierResult>,
    pub checks: Vec<CheckResult>,
    pub snapshots: Vec<SnapshotBody>,
    /// Checks the kernel cannot run (the reason is a kernel fact): listed, never counted as passed.
    pub skips: Vec<CheckResult>,
    pub setup_errors: Vec<String>,
    pub events: u64,
    /// The agent reached its last line: nothing was cut off.
    pub done: bool,
    /// Lines that are not a protocol [`Line`] (not JSON, an unknown kind, a misspelt or missing
    /// field), each with what is wrong with it: they fail the row, so a misspelt check can never
    /// vanish.
    pub malformed: Vec<String>,
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
            Line::Program { monitor, program, status: ProgramStatus::Unavailable, path, .. } => {
                r.unavailable.push(ProgramResult { monitor, program, attached: false, detail: path })
            }
            Line::Program { monitor, program, status: ProgramStatus::Attached, path, .. } => {
                r.programs.push(ProgramResult { monitor, program, attached: true, detail: path })
            }
            Line::Monitor { monitor, error, .. } => {
                r.programs.push(ProgramResult { monitor, program: "*".to_owned(), attached: false, detail: error })
            }
            Line::Verifier { monitor, program, accepted, verified_insns, error, skipped, .. } => {
                r.verifier.push(VerifierResult { monitor, program, accepted, verified_insns, error, skipped })
            }
            Line::Check { name, pass, detail } => r.checks.push(CheckResult { name, pass, detail }),
            Line::Snapshot { monitor, scenario, body } => r.snapshots.push(SnapshotBody { monitor, scenario, body }),
            Line::Skip { name, reason } => r.skips.push(CheckResult { name, pass: false, detail: reason }),
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
