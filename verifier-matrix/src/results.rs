//! Reads what the guest agent sent on the results channel: one JSON object per line.

use serde::Serialize;
use serde_json::Value;

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
    /// Lines that were not JSON (kept so nothing the guest said is lost).
    pub garbage: Vec<String>,
}

fn s(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

/// Parses the results lines; unknown kinds are ignored, malformed lines kept as garbage.
pub fn parse(lines: &[String]) -> GuestResults {
    let mut r = GuestResults::default();
    for line in lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            r.garbage.push(line.to_owned());
            continue;
        };
        match v["kind"].as_str() {
            Some("kernel") => {
                r.release = v["release"].as_str().map(str::to_owned);
                r.btf = v["btf"].as_bool();
            }
            Some("program") if v["status"] == "unavailable" => r.unavailable.push(ProgramResult {
                monitor: s(&v, "monitor"),
                program: s(&v, "program"),
                attached: false,
                detail: s(&v, "path"),
            }),
            Some("program") => r.programs.push(ProgramResult {
                monitor: s(&v, "monitor"),
                program: s(&v, "program"),
                attached: v["status"] == "attached",
                detail: s(&v, "path"),
            }),
            Some("monitor") => r.programs.push(ProgramResult {
                monitor: s(&v, "monitor"),
                program: "*".to_owned(),
                attached: false,
                detail: s(&v, "error"),
            }),
            Some("verifier") => r.verifier.push(VerifierResult {
                monitor: s(&v, "monitor"),
                program: s(&v, "program"),
                accepted: v["accepted"].as_bool().unwrap_or(false),
                verified_insns: v["verified_insns"].as_u64(),
                error: v["error"].as_str().map(str::to_owned),
                skipped: v["skipped"].as_str().map(str::to_owned),
            }),
            Some("check") => r.checks.push(CheckResult {
                name: s(&v, "name"),
                pass: v["pass"].as_bool().unwrap_or(false),
                detail: s(&v, "detail"),
            }),
            Some("snapshot") => r.snapshots.push(SnapshotBody {
                monitor: s(&v, "monitor"),
                scenario: s(&v, "scenario"),
                body: s(&v, "body"),
            }),
            Some("skip") => r.skips.push(CheckResult { name: s(&v, "name"), pass: false, detail: s(&v, "reason") }),
            Some("setup") => r.setup_errors.push(s(&v, "error")),
            Some("events") => r.events += v["count"].as_u64().unwrap_or(0),
            Some("done") => r.done = true,
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_agent_lines_and_keeps_garbage() {
        let lines: Vec<String> = [
            r#"{"kind":"kernel","release":"6.1.0-50-cloud-amd64","btf":true}"#,
            r#"{"kind":"program","monitor":"process","program":"process_exec","status":"attached","path":"tracepoint:sched/sched_process_exec"}"#,
            r#"{"kind":"monitor","monitor":"dns","status":"failed","error":"verifier says no"}"#,
            r#"{"kind":"check","name":"process.leaf","pass":false,"detail":"ppid 5"}"#,
            "not json",
            r#"{"kind":"done"}"#,
        ]
        .map(str::to_owned)
        .to_vec();
        let r = parse(&lines);
        assert_eq!(r.release.as_deref(), Some("6.1.0-50-cloud-amd64"));
        assert_eq!(r.programs.len(), 2);
        assert!(r.programs[0].attached && !r.programs[1].attached);
        assert!(!r.checks[0].pass);
        assert_eq!(r.garbage, vec!["not json".to_owned()]);
        assert!(r.done);
    }
}
