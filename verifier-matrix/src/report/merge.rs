//! `report merge`: joins the reports of the shards of one selection into the report one run of
//! that selection would have written.
//!
//! The inputs must be of one source and one selection (the same rows, split the same way), hold
//! different shards, and together hold every shard: a merge that silently lacked a shard would
//! report fewer kernels than were asked for. Rows come out in selection order and the run-level
//! problems are recomputed from every row, so verdicts, totals and exit status are a single run's.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::report::{
    document::{Report, ReportFileError, SnapshotAudit},
    RowKey,
};

/// Why shard reports cannot be joined.
#[derive(Debug, Error)]
pub enum MergeError {
    #[error("report merge: no reports given")]
    NoReports,
    #[error("report merge")]
    File(#[source] ReportFileError),
    #[error("report merge: {a} and {b} were built from different sources ({source_a} and {source_b})")]
    Sources { a: PathBuf, b: PathBuf, source_a: String, source_b: String },
    #[error("report merge: {a} and {b} ran different selections ({what})")]
    Selections { a: PathBuf, b: PathBuf, what: String },
    #[error("report merge: row {row} is in both {a} and {b}")]
    Overlap { row: RowKey, a: PathBuf, b: PathBuf },
    #[error("report merge: shard {shard} is in both {a} and {b}")]
    ShardTwice { shard: u32, a: PathBuf, b: PathBuf },
    #[error("report merge: shard {shard} of {count} is missing (give every shard's report)")]
    Missing { shard: u32, count: u32 },
}

/// Reads each report and merges them.
pub fn merge_files(paths: &[PathBuf]) -> Result<Report, MergeError> {
    let reports = paths
        .iter()
        .map(|p| Report::load(p).map(|r| (p.clone(), r)).map_err(MergeError::File))
        .collect::<Result<Vec<_>, _>>()?;
    merge(reports)
}

/// Merges reports already read (and checked by [`Report::load`] or [`Report::check`]); each is
/// named by its path in errors.
pub fn merge(reports: Vec<(PathBuf, Report)>) -> Result<Report, MergeError> {
    let Some((first_path, first)) = reports.first() else { return Err(MergeError::NoReports) };
    let show = |p: &Path| p.to_path_buf();
    for (path, r) in &reports[1..] {
        if r.source != first.source {
            return Err(MergeError::Sources {
                a: show(first_path),
                b: show(path),
                source_a: first.source.to_string(),
                source_b: r.source.to_string(),
            });
        }
        let s = (&r.selection, &first.selection);
        let what = if s.0.kernels != s.1.kernels || s.0.arch != s.1.arch {
            Some(format!("--kernels {} --arch {} and --kernels {} --arch {}", s.1.kernels, s.1.arch, s.0.kernels, s.0.arch))
        } else if s.0.shards != s.1.shards {
            Some(format!("split into {} and into {} shards", s.1.shards, s.0.shards))
        } else if s.0.rows != s.1.rows {
            Some("the same options named different rows or split them differently: another kernels.lock?".to_owned())
        } else {
            None
        };
        if let Some(what) = what {
            return Err(MergeError::Selections { a: show(first_path), b: show(path), what });
        }
    }
    // Each row once; the same shard twice shows as its rows twice.
    let mut owner: BTreeMap<RowKey, &Path> = BTreeMap::new();
    for (path, r) in &reports {
        for row in &r.rows {
            if let Some(a) = owner.insert(row.key(), path) {
                return Err(MergeError::Overlap { row: row.key(), a: show(a), b: show(path) });
            }
        }
    }
    let count = first.selection.shards;
    let mut shards: Vec<u32> = reports.iter().flat_map(|(_, r)| r.shards.iter().copied()).collect();
    shards.sort_unstable();
    if let Some(shard) = (1..=count).find(|s| !shards.contains(s)) {
        return Err(MergeError::Missing { shard, count });
    }
    if let Some(shard) = shards.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]) {
        // Only a shard without rows gets here: one with rows overlaps above.
        let mut holders = reports.iter().filter(|(_, r)| r.shards.contains(&shard)).map(|(p, _)| p.clone());
        let a = holders.next().unwrap_or_default();
        return Err(MergeError::ShardTwice { shard, a, b: holders.next().unwrap_or_default() });
    }

    let position: BTreeMap<RowKey, usize> = first.selection.rows.iter().enumerate().map(|(i, p)| (p.key(), i)).collect();
    let mut rows: Vec<_> = reports.iter().flat_map(|(_, r)| r.rows.iter().cloned()).collect();
    rows.sort_by_key(|r| position.get(&r.key()).copied().unwrap_or(usize::MAX));
    let mut accel: Vec<String> = Vec::new();
    for (_, r) in &reports {
        for a in &r.accel {
            let labelled = if r.shards.len() == 1 && count > 1 { format!("shard {}/{count}: {a}", r.shards[0]) } else { a.clone() };
            accel.push(labelled);
        }
    }
    // Every shard inventoried the same tree (one source); the live variants are the host row's
    // shard's, or, with no host row selected, any shard's.
    let stored = first.snapshots.stored.clone();
    let mut stale: Option<Vec<String>> = None;
    for (_, r) in &reports {
        if let Some(v) = &r.snapshots.stale_variants {
            let all = stale.get_or_insert_with(Vec::new);
            all.extend(v.iter().cloned());
            all.sort();
            all.dedup();
        }
    }
    let mut merged = Report {
        format: first.format,
        source: first.source.clone(),
        selection: first.selection.clone(),
        shards,
        accel,
        rows,
        snapshots: SnapshotAudit { stored, stale_variants: stale },
        problems: Vec::new(),
    };
    merged.judge_run();
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::{
        arch::Arch,
        kernels::shard::{self, Candidate},
        report::{
            document::{Planned, Selection, Source, StoredSnapshot},
            results::{GuestResults, SnapshotBody},
            Row, Verdict,
        },
    };

    /// (arch, line, boots, verdict) of a selection shaped like the default matrix's.
    fn selection_rows() -> Vec<(Arch, &'static str, bool, Verdict)> {
        vec![
            (Arch::X86_64, "4.19", false, Verdict::Unavailable("archived".into())),
            (Arch::X86_64, "5.10", true, Verdict::Pass),
            (Arch::X86_64, "6.1", true, Verdict::Fail("check process.leaf failed".into())),
            (Arch::Arm64, "6.12", true, Verdict::Pass),
            (Arch::X86_64, "6.12", true, Verdict::BootFailed("kernel panic".into())),
            (Arch::X86_64, "host", true, Verdict::Pass),
        ]
    }

    fn row(arch: Arch, line: &str, verdict: Verdict) -> Row {
        // Each row that ran produced the one stored snapshot.
        let results = (!matches!(verdict, Verdict::Unavailable(_))).then(|| GuestResults {
            snapshots: vec![SnapshotBody { monitor: "process".into(), scenario: "exec_chain".into(), body: "[]".into() }],
            ..Default::default()
        });
        Row { arch, line: line.into(), release: None, accel: None, wall: None, verdict, results, splats: vec![], console_tail: None }
    }

    /// The report of shard `index` of `count` of [`selection_rows`], as a run writes it.
    fn shard_report(index: u32, count: u32) -> Report {
        let all = selection_rows();
        let candidates: Vec<Candidate> = all.iter().map(|(arch, _, boots, _)| Candidate { arch: *arch, boots: *boots }).collect();
        let shard_of = shard::assign(&candidates, count);
        let selection = Selection {
            kernels: "default".into(),
            arch: "all".into(),
            shards: count,
            rows: all.iter().zip(&shard_of).map(|((arch, line, ..), &shard)| Planned { arch: *arch, line: (*line).into(), shard }).collect(),
        };
        let rows = all
            .iter()
            .zip(&shard_of)
            .filter(|(_, &s)| s == index)
            .map(|((arch, line, _, verdict), _)| row(*arch, line, verdict.clone()))
            .collect();
        let snapshots = SnapshotAudit {
            stored: vec![StoredSnapshot { path: "snapshots/process/exec_chain.snap".into(), monitor: "process".into(), scenario: "exec_chain".into() }],
            stale_variants: Some(vec![]),
        };
        let source = Source { commit: Some("abc".into()), changes: None };
        let report = Report::new(source, selection, vec![index], vec!["tcg".into()], rows, snapshots);
        report.check().expect("a shard report is consistent");
        report
    }

    /// An error and its sources, as `xtask` prints them (`{:#}` of anyhow).
    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }

    fn named(reports: Vec<Report>) -> Vec<(PathBuf, Report)> {
        reports.into_iter().enumerate().map(|(i, r)| (PathBuf::from(format!("shard{}.json", i + 1)), r)).collect()
    }

    fn verdicts(r: &Report) -> Vec<(String, Verdict)> {
        r.rows.iter().map(|r| (r.key().to_string(), r.verdict.clone())).collect()
    }

    #[rstest]
    fn merged_shards_judge_as_one_run(#[values(1, 2, 3, 6, 8)] count: u32) {
        let whole = shard_report(1, 1);
        let shards: Vec<Report> = (1..=count).rev().map(|i| shard_report(i, count)).collect();
        let merged = merge(named(shards)).expect("merge");
        assert_eq!(verdicts(&merged), verdicts(&whole), "rows in selection order with their verdicts");
        assert_eq!(merged.problems, whole.problems);
        assert_eq!(merged.exit_status(), whole.exit_status());
        assert_eq!(merged.exit_status(), 2, "a boot failure");
        assert!(merged.is_complete());
        let md = crate::report::render::render_markdown(&merged);
        assert!(md.contains("3 passed, 1 failed, 1 failed to boot, 1 unavailable"), "{md}");
        merged.check().expect("the merged report is itself a consistent report");
    }

    /// A stored snapshot that no row of any shard produced fails the merged run once, as it
    /// fails one run; one that another shard produced does not.
    #[test]
    fn run_problems_are_judged_over_every_shard() {
        let add_stored = |mut r: Report, scenario: &str| {
            r.snapshots.stored.push(StoredSnapshot {
                path: format!("snapshots/dns/{scenario}.snap"),
                monitor: "dns".into(),
                scenario: scenario.into(),
            });
            r.judge_run();
            r
        };
        let (mut a, mut b) = (add_stored(shard_report(1, 2), "gone"), add_stored(shard_report(2, 2), "gone"));
        // Shard 2's host row produced dns/udp_tcp; shard 1 never did.
        let host = b.rows.iter_mut().find(|r| r.line == "host").expect("host in shard 2");
        host.results.as_mut().unwrap().snapshots.push(SnapshotBody { monitor: "dns".into(), scenario: "udp_tcp".into(), body: "[]".into() });
        a = add_stored(a, "udp_tcp");
        b = add_stored(b, "udp_tcp");
        assert!(a.problems[0].contains("udp_tcp"), "shard 1 alone cannot see it produced: {:?}", a.problems);
        let merged = merge(named(vec![a, b])).unwrap();
        assert_eq!(merged.problems, vec!["unreferenced snapshots: snapshots/dns/gone.snap".to_owned()]);
    }

    #[test]
    fn overlapping_reports_are_refused() {
        let err = merge(named(vec![shard_report(1, 2), shard_report(2, 2), shard_report(1, 2)])).unwrap_err();
        assert!(matches!(&err, MergeError::Overlap { a, b, .. } if a.ends_with("shard1.json") && b.ends_with("shard3.json")), "{err}");
        assert!(err.to_string().contains("is in both shard1.json and shard3.json"), "{err}");
        // A whole run and a shard of it overlap too.
        let err = merge(named(vec![shard_report(1, 1), shard_report(1, 1)])).unwrap_err();
        assert!(matches!(err, MergeError::Overlap { .. }), "{err}");
    }

    #[test]
    fn a_missing_shard_is_refused() {
        let err = merge(named(vec![shard_report(1, 3), shard_report(3, 3)])).unwrap_err();
        assert!(matches!(err, MergeError::Missing { shard: 2, count: 3 }), "{err}");
    }

    #[test]
    fn an_empty_shard_given_twice_is_refused() {
        // Eight shards of six rows: shards 7 and 8 hold none.
        let mut reports: Vec<Report> = (1..=8).map(|i| shard_report(i, 8)).collect();
        reports.push(shard_report(8, 8));
        let err = merge(named(reports)).unwrap_err();
        assert!(matches!(err, MergeError::ShardTwice { shard: 8, .. }), "{err}");
    }

    #[rstest]
    #[case::source(|r: &mut Report| r.source.commit = Some("def".into()), "different sources")]
    #[case::uncommitted(|r: &mut Report| r.source.changes = Some("0123".into()), "uncommitted changes")]
    #[case::kernels(|r: &mut Report| r.selection.kernels = "all".into(), "--kernels all")]
    #[case::split(|r: &mut Report| r.selection.rows[0].shard = 3 - r.selection.rows[0].shard, "split them differently")]
    fn reports_of_other_runs_are_refused(#[case] change: fn(&mut Report), #[case] message: &str) {
        let mut b = shard_report(2, 2);
        change(&mut b);
        let err = merge(named(vec![shard_report(1, 2), b])).unwrap_err().to_string();
        assert!(err.contains(message) && err.contains("shard1.json") && err.contains("shard2.json"), "{err}");
    }

    #[test]
    fn shard_counts_must_agree() {
        let err = merge(named(vec![shard_report(1, 2), shard_report(2, 3)])).unwrap_err().to_string();
        assert!(err.contains("split into 2 and into 3 shards"), "{err}");
    }

    #[rstest]
    #[case::not_json("not json", "not a verifier matrix report")]
    #[case::old_format("[{\"line\": \"6.1\"}]", "not a verifier matrix report")]
    #[case::no_format("{\"rows\": []}", "no `format` field")]
    #[case::future_format("{\"format\": 99}", "format 99, this harness reads format 1")]
    #[case::missing_field("{\"format\": 1, \"rows\": []}", "missing field")]
    fn malformed_files_are_refused(#[case] text: &str, #[case] message: &str) {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        std::fs::write(&good, serde_json::to_vec(&shard_report(1, 2)).unwrap()).unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, text).unwrap();
        let err = chain(&merge_files(&[good, bad.clone()]).unwrap_err());
        assert!(err.starts_with("report merge: report ") && err.contains(message) && err.contains(&bad.display().to_string()), "{err}");
    }

    #[rstest]
    #[case::row_twice(|r: &mut Report| { let row = r.rows[0].clone(); r.rows.push(row) }, "appears twice")]
    #[case::row_of_another_shard(|r: &mut Report| r.rows.push(row(Arch::X86_64, "5.10", Verdict::Pass)), "not one the selection gives")]
    #[case::row_dropped(|r: &mut Report| { r.rows.pop(); }, "is missing")]
    #[case::shard_out_of_range(|r: &mut Report| r.shards = vec![3], "not distinct ascending numbers from 1 to 2")]
    fn inconsistent_reports_are_refused(#[case] change: fn(&mut Report), #[case] message: &str) {
        let dir = tempfile::tempdir().unwrap();
        let mut report = shard_report(2, 2);
        change(&mut report);
        let path = dir.path().join("r.json");
        std::fs::write(&path, serde_json::to_vec(&report).unwrap()).unwrap();
        let err = chain(&Report::load(&path).unwrap_err());
        assert!(err.contains(message), "{err}");
    }

    #[test]
    fn a_report_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let report = shard_report(1, 2);
        report.write(dir.path()).unwrap();
        let back = Report::load(&dir.path().join("report.json")).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&report).unwrap());
        assert!(std::fs::read_to_string(dir.path().join("report.md")).unwrap().contains("Shards: 1 of 2"));
    }
}
