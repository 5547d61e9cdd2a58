//! The report as Markdown, from the judged rows.

use std::fmt::Write as _;

use crate::report::{document::Report, first_line, totals, Verdict};

/// The report as Markdown: what ran (source, selection, shards, accelerator), a table with one
/// row per (architecture, kernel), the run's own problems, then the reasons for every row that
/// did not pass, each named `<arch>/<kernel>`.
pub fn render_markdown(report: &Report) -> String {
    let rows = &report.rows;
    let mut out = String::new();
    let _ = writeln!(out, "# Verifier matrix\n");
    let _ = writeln!(out, "Source: {}  ", report.source);
    let sel = &report.selection;
    let _ = writeln!(out, "Selection: --kernels {} --arch {}  ", sel.kernels, sel.arch);
    if sel.shards > 1 {
        let whole = if report.is_complete() { " (every shard: the whole selection)" } else { "" };
        let _ = writeln!(out, "Shards: {}{whole}  ", report.shard_label());
    }
    match report.accel.as_slice() {
        [] => {
            let _ = writeln!(out, "Accelerator: none (no VM booted)");
        }
        [one] => {
            let _ = writeln!(out, "Accelerator: {one}");
        }
        many => {
            let _ = writeln!(out, "Accelerator:");
            for a in many {
                let _ = writeln!(out, "- {a}");
            }
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| arch | kernel | release | verdict | verifier accepted | verified insns | programs attached | checks passed | events | wall (s) |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
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
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.arch,
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
    for p in &report.problems {
        let _ = writeln!(out, "- run: FAIL: {p}");
    }
    for r in rows {
        let key = r.key();
        // Every skip with the kernel's explanation (or UNEXPLAINED, which failed the row).
        let judged = |j: &Option<tapio_kernel_gates::Judgement>| match j {
            Some(j) => format!(" ({j})"),
            None => String::new(),
        };
        for u in r.results.iter().flat_map(|res| &res.unavailable) {
            let _ = writeln!(out, "- {key}: {}/{} unavailable: {}{}", u.monitor, u.program, first_line(&u.detail), judged(&u.judgement));
        }
        for v in r.results.iter().flat_map(|res| &res.verifier).filter(|v| v.skipped.is_some()) {
            let why = v.skipped.as_deref().unwrap_or_default();
            let _ = writeln!(out, "- {key}: verifier skipped {}/{}: {why}{}", v.monitor, v.program, judged(&v.judgement));
        }
        for skip in r.results.iter().flat_map(|res| &res.skips) {
            let _ = writeln!(out, "- {key}: SKIP {}: {}{}", skip.name, skip.detail, judged(&skip.judgement));
        }
        if let Some(source) = r.results.as_ref().and_then(|res| res.config_source.as_deref()) {
            let has_skips = r.results.as_ref().is_some_and(|res| !res.not_run().is_empty());
            if has_skips {
                let _ = writeln!(out, "- {key}: kernel config: {source}");
            }
        }
        match &r.verdict {
            Verdict::Pass => {}
            Verdict::Unavailable(why) => {
                let _ = writeln!(out, "- {key}: unavailable: {why}");
            }
            Verdict::Fail(why) | Verdict::BootFailed(why) => {
                let _ = writeln!(out, "- {key}: {}: {why}", r.verdict.label());
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
    use crate::{arch::Arch, report::Row};

    #[test]
    fn unavailable_is_never_counted_as_passed() {
        let row = |line: &str, v| Row {
            arch: Arch::X86_64,
            line: line.into(),
            release: None,
            accel: None,
            wall: None,
            verdict: v,
            results: None,
            splats: vec![],
            console_tail: None,
        };
        let rows = vec![row("a", Verdict::Pass), row("x", Verdict::Unavailable("no".into())), row("c", Verdict::BootFailed("panic".into()))];
        assert_eq!(totals(&rows), (1, 0, 1, 1));
        let md = render_markdown(&Report::of_rows(rows));
        assert!(md.contains("1 passed, 0 failed, 1 failed to boot, 1 unavailable"), "{md}");
        assert!(md.contains("x86_64/x: unavailable: no"), "{md}");
        assert!(md.contains("| x86_64 | a | - | pass |"), "{md}");
    }
}
