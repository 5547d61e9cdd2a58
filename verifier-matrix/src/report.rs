//! The matrix report: one row per kernel, a verdict that never counts a skip as a pass.

use std::{fmt::Write as _, time::Duration};

use serde::Serialize;

use crate::{console::Splat, results::GuestResults};

/// The verdict of one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "kebab-case")]
pub enum Verdict {
    /// Booted, every monitor attached, every check passed, no kernel splat.
    Pass,
    /// Booted, but a program failed to load/attach, a check failed, or the kernel complained.
    Fail(String),
    /// The VM did not boot to the agent's end (panic, timeout, QEMU failure).
    BootFailed(String),
    /// The kernel could not be obtained: never counted as passing.
    Unavailable(String),
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail(_) => "FAIL",
            Self::BootFailed(_) => "BOOT-FAILED",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// One kernel's row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The manifest line (`6.1`), `host`, or the name of a user-supplied kernel.
    pub line: String,
    pub release: Option<String>,
    pub accel: Option<String>,
    #[serde(with = "secs")]
    pub wall: Option<Duration>,
    pub verdict: Verdict,
    pub results: Option<GuestResults>,
    pub splats: Vec<Splat>,
    /// The console's last lines when the row did not pass.
    pub console_tail: Option<String>,
}

mod secs {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0),
            None => s.serialize_none(),
        }
    }
}

/// Decides a booted row's verdict from what the agent sent and what the console showed.
///
/// A program unavailable, a check skipped or a program the verifier pass skipped is a kernel
/// fact only when the kernel explains it ([`tapio_kernel_gates::judge`]: older than the feature,
/// the feature's config off, or its probe refused as root); otherwise it fails the row, as
/// cilium/ebpf's `checkVersion` fails a test that skips on a kernel that should have the feature.
pub fn judge(results: &GuestResults, splats: &[Splat]) -> Verdict {
    let mut problems = Vec::new();
    if !results.done {
        problems.push("agent did not finish".to_owned());
    }
    for e in &results.setup_errors {
        problems.push(format!("setup: {e}"));
    }
    for m in &results.malformed {
        problems.push(format!("malformed {m}"));
    }
    for v in results.verifier.iter().filter(|v| !v.accepted && v.skipped.is_none()) {
        let why = v.error.as_deref().unwrap_or("no error text");
        problems.push(format!("verifier rejected {}/{}: {why}", v.monitor, v.program));
    }
    for p in results.programs.iter().filter(|p| !p.attached) {
        problems.push(format!("{}/{}: {}", p.monitor, p.program, first_line(&p.detail)));
    }
    for c in results.checks.iter().filter(|c| !c.pass) {
        problems.push(format!("check {} failed", c.name));
    }
    let facts = results.facts();
    for (what, needs) in results.not_run() {
        if let tapio_kernel_gates::Judgement::Unexplained { why } = tapio_kernel_gates::judge(needs, &facts) {
            problems.push(format!("{what} and the kernel does not explain it (needs {needs}): {why}"));
        }
    }
    if results.programs.is_empty() {
        problems.push("no program reported".to_owned());
    }
    for s in splats {
        problems.push(format!("kernel {}: {}", s.kind, s.first_line));
    }
    if problems.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(problems.join("; "))
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// Totals over rows: skips (unavailable) are their own column, never passes.
pub fn totals(rows: &[Row]) -> (usize, usize, usize, usize) {
    let count = |f: fn(&Verdict) -> bool| rows.iter().filter(|r| f(&r.verdict)).count();
    (
        count(|v| matches!(v, Verdict::Pass)),
        count(|v| matches!(v, Verdict::Fail(_))),
        count(|v| matches!(v, Verdict::BootFailed(_))),
        count(|v| matches!(v, Verdict::Unavailable(_))),
    )
}

/// The report as Markdown: a table, then the reasons for every row that did not pass.
pub fn render_markdown(rows: &[Row], accel_note: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Verifier matrix\n\nAccelerator: {accel_note}\n");
    let _ = writeln!(out, "| kernel | release | verdict | verifier accepted | verified insns | programs attached | checks passed | events | wall (s) |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let (verified, insns) = match &r.results {
            Some(res) if !res.verifier.is_empty() => (
                {
                    let loaded: Vec<_> = res.verifier.iter().filter(|v| v.skipped.is_none()).collect();
                    let skipped = res.verifier.len() - loaded.len();
                    let accepted = loaded.iter().filter(|v| v.accepted).count();
                    match skipped {
                        0 => format!("{accepted}/{}", loaded.len()),
                        n => format!("{accepted}/{} (+{n} skipped)", loaded.len()),
                    }
                },
                match res.verifier.iter().filter(|v| v.skipped.is_none()).map(|v| v.verified_insns).sum::<Option<u64>>() {
                    Some(total) => total.to_string(),
                    None => "n/a (< 5.16)".to_owned(),
                },
            ),
            _ => ("-".into(), "-".into()),
        };
        let (progs, checks, events) = match &r.results {
            Some(res) => (
                match res.unavailable.len() {
                    0 => format!("{}/{}", res.programs.iter().filter(|p| p.attached).count(), res.programs.len()),
                    n => format!("{}/{} (+{n} unavailable)", res.programs.iter().filter(|p| p.attached).count(), res.programs.len()),
                },
                format!("{}/{}", res.checks.iter().filter(|c| c.pass).count(), res.checks.len()),
                res.events.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.line,
            r.release.as_deref().unwrap_or("-"),
            r.verdict.label(),
            verified,
            insns,
            progs,
            checks,
            events,
            r.wall.map_or("-".into(), |w| format!("{:.1}", w.as_secs_f64())),
        );
    }
    let (pass, fail, boot, unavailable) = totals(rows);
    let _ = writeln!(out, "\n{pass} passed, {fail} failed, {boot} failed to boot, {unavailable} unavailable (not counted as passed)\n");
    for r in rows {
        // Every skip with the kernel's explanation (or UNEXPLAINED, which failed the row).
        let judged = |j: &Option<tapio_kernel_gates::Judgement>| match j {
            Some(j) => format!(" ({j})"),
            None => String::new(),
        };
        for u in r.results.iter().flat_map(|res| &res.unavailable) {
            let _ = writeln!(out, "- {}: {}/{} unavailable: {}{}", r.line, u.monitor, u.program, first_line(&u.detail), judged(&u.judgement));
        }
        for v in r.results.iter().flat_map(|res| &res.verifier).filter(|v| v.skipped.is_some()) {
            let why = v.skipped.as_deref().unwrap_or_default();
            let _ = writeln!(out, "- {}: verifier skipped {}/{}: {why}{}", r.line, v.monitor, v.program, judged(&v.judgement));
        }
        for skip in r.results.iter().flat_map(|res| &res.skips) {
            let _ = writeln!(out, "- {}: SKIP {}: {}{}", r.line, skip.name, skip.detail, judged(&skip.judgement));
        }
        if let Some(source) = r.results.as_ref().and_then(|res| res.config_source.as_deref()) {
            let has_skips = r.results.as_ref().is_some_and(|res| !res.not_run().is_empty());
            if has_skips {
                let _ = writeln!(out, "- {}: kernel config: {source}", r.line);
            }
        }
        match &r.verdict {
            Verdict::Pass => {}
            Verdict::Unavailable(why) => {
                let _ = writeln!(out, "- {}: unavailable: {why}", r.line);
            }
            Verdict::Fail(why) | Verdict::BootFailed(why) => {
                let _ = writeln!(out, "- {}: {}: {why}", r.line, r.verdict.label());
                if let Some(tail) = &r.console_tail {
                    let _ = writeln!(out, "\n  console tail:\n```\n{tail}\n```");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::results::{CheckResult, ProgramResult};

    fn good() -> GuestResults {
        GuestResults {
            release: Some("6.1".into()),
            programs: vec![ProgramResult {
                monitor: "process".into(),
                program: "process_exec".into(),
                attached: true,
                detail: String::new(),
                needs: Default::default(),
                judgement: None,
            }],
            checks: vec![CheckResult { name: "process.leaf".into(), pass: true, detail: String::new() }],
            done: true,
            ..Default::default()
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(judge(&good(), &[]), Verdict::Pass);
        let mut r = good();
        r.checks[0].pass = false;
        assert!(matches!(judge(&r, &[]), Verdict::Fail(m) if m.contains("process.leaf")));
        let mut r = good();
        r.done = false;
        assert!(matches!(judge(&r, &[]), Verdict::Fail(m) if m.contains("did not finish")));
        let r = GuestResults { done: true, ..Default::default() };
        assert!(matches!(judge(&r, &[]), Verdict::Fail(m) if m.contains("no program")));
    }

    /// issue 15, item 8: a line the harness does not understand fails the row, naming the line;
    /// before, results.rs dropped unknown kinds and judge() ignored lines that were not JSON.
    const GOOD_LINES: [&str; 4] = [
        r#"{"kind":"kernel","release":"6.1.0","version":"1","btf":true}"#,
        r#"{"kind":"program","monitor":"process","program":"process_exec","status":"attached","path":"tp"}"#,
        r#"{"kind":"check","name":"process.leaf","pass":true,"detail":""}"#,
        r#"{"kind":"done"}"#,
    ];

    #[test]
    fn good_results_lines_pass() {
        let lines: Vec<String> = GOOD_LINES.map(str::to_owned).to_vec();
        assert_eq!(judge(&crate::results::parse(&lines), &[]), Verdict::Pass);
    }

    #[rstest]
    #[case::misspelt_kind(r#"{"kind":"chek","name":"process.exit","pass":false,"detail":"a misspelt kind"}"#)]
    #[case::misspelt_field(r#"{"kind":"check","name":"process.exit","passed":false,"detail":"a misspelt field"}"#)]
    #[case::not_json("tapio-guest: something printed on the results port")]
    fn a_bad_results_line_fails_the_row(#[case] bad: &str) {
        let mut lines: Vec<String> = GOOD_LINES.map(str::to_owned).to_vec();
        lines.insert(2, bad.to_owned());
        let verdict = judge(&crate::results::parse(&lines), &[]);
        assert!(matches!(&verdict, Verdict::Fail(m) if m.contains("malformed results line 3") && m.contains(bad)), "{bad}: {verdict:?}");
    }

    #[test]
    fn unavailable_is_never_counted_as_passed() {
        let row = |v| Row { line: "x".into(), release: None, accel: None, wall: None, verdict: v, results: None, splats: vec![], console_tail: None };
        let rows = vec![row(Verdict::Pass), row(Verdict::Unavailable("no".into())), row(Verdict::BootFailed("panic".into()))];
        assert_eq!(totals(&rows), (1, 0, 1, 1));
        let md = render_markdown(&rows, "tcg");
        assert!(md.contains("1 passed, 0 failed, 1 failed to boot, 1 unavailable"), "{md}");
        assert!(md.contains("x: unavailable: no"));
    }
}
