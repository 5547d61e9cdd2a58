//! The report as Markdown, from the judged rows.

use std::fmt::Write as _;

use crate::report::{first_line, totals, Row, Verdict};

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
                // Over the accepted programs only: a rejected one has no count on any kernel, and
                // must not turn the total into "n/a".
                match res.verifier.iter().filter(|v| v.skipped.is_none() && v.accepted).map(|v| v.verified_insns).sum::<Option<u64>>() {
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
    use super::*;

    #[test]
    fn unavailable_is_never_counted_as_passed() {
        let row = |v| Row { line: "x".into(), arch: Default::default(), release: None, accel: None, wall: None, verdict: v, results: None, splats: vec![], console_tail: None };
        let rows = vec![row(Verdict::Pass), row(Verdict::Unavailable("no".into())), row(Verdict::BootFailed("panic".into()))];
        assert_eq!(totals(&rows), (1, 0, 1, 1));
        let md = render_markdown(&rows, "tcg");
        assert!(md.contains("1 passed, 0 failed, 1 failed to boot, 1 unavailable"), "{md}");
        assert!(md.contains("x: unavailable: no"));
    }
}
