//! The report as one document (`report.json`): the rows, and what a merge needs to join shard
//! reports into the report one run would have written.
//!
//! Besides the rows it records the source the bundle was built from (commit, and a hash of any
//! uncommitted change), the selection (the `--kernels` and `--arch` it came from, every row it
//! names in order, and the shard each row belongs to), the shards the report holds, and the
//! snapshot inventory the run-level check needs. The run-level check (stored snapshots no row
//! produced or skipped) is not any one row's verdict: a shard cannot know which row is the first
//! of the whole run, so it is the report's [`Report::problems`], recomputed from the recorded
//! facts whenever rows are joined, and a merged report judges exactly as one run does.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::{
    arch::Arch,
    report::{totals, Row, RowKey},
};

/// The version of this document's shape; a merge refuses reports of any other.
pub const FORMAT: u32 = 1;

/// Errors reading a report document.
#[derive(Debug, Error)]
pub enum ReportFileError {
    #[error("report {path}: read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("report {path}: not a verifier matrix report")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("report {path}: format {found}, this harness reads format {FORMAT}")]
    Format { path: PathBuf, found: u32 },
    #[error("report {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// What the bundle was built from. Two reports with different sources proved different code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// `git rev-parse HEAD` of the workspace; none outside a git checkout.
    pub commit: Option<String>,
    /// sha256 of `git diff HEAD --binary` when tracked files differ from the commit, so two
    /// runs of one dirty tree agree and a run of another edit does not. Untracked files are left
    /// out: a run writes some (pending snapshots) while another may be starting.
    pub changes: Option<String>,
}

impl Source {
    /// The workspace's commit and uncommitted changes, as git reports them (nothing when git or
    /// the repository is missing: the report then cannot tell sources apart, and says so).
    pub fn of_workspace(workspace: &Path) -> Source {
        let git = |args: &[&str]| {
            // safe.directory: CI runs the harness as root in a checkout the runner user owns,
            // where git would otherwise refuse the repository and every source would be unknown.
            Command::new("git")
                .arg("-c")
                .arg(format!("safe.directory={}", workspace.display()))
                .arg("-C")
                .arg(workspace)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| o.stdout)
        };
        let commit = git(&["rev-parse", "HEAD"]).map(|out| String::from_utf8_lossy(&out).trim().to_owned());
        let changes = commit
            .as_ref()
            .and_then(|_| git(&["diff", "HEAD", "--binary"]))
            .filter(|diff| !diff.is_empty())
            .map(|diff| hex::encode(Sha256::digest(diff)));
        Source { commit, changes }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.commit, &self.changes) {
            (None, _) => f.write_str("unknown (not a git checkout)"),
            (Some(c), None) => f.write_str(c),
            (Some(c), Some(d)) => write!(f, "{c} with uncommitted changes (diff sha256 {})", &d[..16.min(d.len())]),
        }
    }
}

/// One row the selection names, and the shard it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Planned {
    pub arch: Arch,
    pub line: String,
    pub shard: u32,
}

impl Planned {
    pub fn key(&self) -> RowKey {
        RowKey { arch: self.arch, line: self.line.clone() }
    }
}

/// The rows a run was asked for, before and after the split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// `--kernels` as given (`default`, `all`, a list), with any user-supplied kernel.
    pub kernels: String,
    /// `--arch` as given.
    pub arch: String,
    /// The number of shards the selection was split into (1 for an unsharded run).
    pub shards: u32,
    /// Every selected row in selection order, with its shard ([`crate::kernels::shard`]).
    pub rows: Vec<Planned>,
}

/// A stored snapshot file: what a row must produce or skip.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredSnapshot {
    /// Relative to the workspace, e.g. `snapshots/process/exec_chain@6.1.snap`.
    pub path: String,
    pub monitor: String,
    pub scenario: String,
}

/// The stored snapshots when the run began, for the run-level check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotAudit {
    pub stored: Vec<StoredSnapshot>,
    /// Variants for kernels the matrix never runs. `None` in a shard whose selection has the
    /// host row in another shard: which variants are live depends on the host's release, and
    /// only the shard that ran the host row knows it.
    pub stale_variants: Option<Vec<String>>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// [`FORMAT`].
    pub format: u32,
    pub source: Source,
    pub selection: Selection,
    /// The shards whose rows this report holds, ascending: one for a shard's report, every one
    /// for a whole run or a complete merge.
    pub shards: Vec<u32>,
    /// How each process that ran rows chose its accelerator.
    pub accel: Vec<String>,
    /// The rows of the held shards, in selection order.
    pub rows: Vec<Row>,
    pub snapshots: SnapshotAudit,
    /// Problems of the run as a whole (derived by [`Report::judge_run`] from the rows and
    /// [`Report::snapshots`]; recomputed on merge, never trusted from a file).
    pub problems: Vec<String>,
}

impl Report {
    /// A report of `rows`, its run-level problems judged.
    pub fn new(source: Source, selection: Selection, shards: Vec<u32>, accel: Vec<String>, rows: Vec<Row>, snapshots: SnapshotAudit) -> Report {
        let mut report = Report { format: FORMAT, source, selection, shards, accel, rows, snapshots, problems: Vec::new() };
        report.judge_run();
        report
    }

    /// A whole (unsharded) report of `rows` with no recorded source or snapshots, for tests.
    pub fn of_rows(rows: Vec<Row>) -> Report {
        let planned = rows.iter().map(|r| Planned { arch: r.arch, line: r.line.clone(), shard: 1 }).collect();
        let selection = Selection { kernels: "default".to_owned(), arch: "all".to_owned(), shards: 1, rows: planned };
        Report::new(Source::default(), selection, vec![1], Vec::new(), rows, SnapshotAudit::default())
    }

    /// Whether the report holds every shard of its selection: only then may "nothing passed"
    /// fail it (a shard of unavailable rows is not a failure; the merge judges the whole).
    pub fn is_complete(&self) -> bool {
        self.shards.iter().copied().eq(1..=self.selection.shards)
    }

    /// Which shards a report holds: `2 of 3`, or `1, 2, 3 of 3` for a merge of every shard.
    pub fn shard_label(&self) -> String {
        let held: Vec<String> = self.shards.iter().map(u32::to_string).collect();
        format!("{} of {}", held.join(", "), self.selection.shards)
    }

    /// Recomputes [`Report::problems`]: stored snapshots that no row produced and no row
    /// skipped, and variants for kernels the matrix never runs; raised only when some row
    /// produced snapshots at all (a run where nothing booted has failed for that already).
    pub fn judge_run(&mut self) {
        let mut referenced = BTreeSet::new();
        let mut accounted = BTreeSet::new();
        for results in self.rows.iter().filter_map(|r| r.results.as_ref()) {
            for snap in &results.snapshots {
                referenced.insert((snap.monitor.as_str(), snap.scenario.as_str()));
                accounted.insert((snap.monitor.as_str(), snap.scenario.as_str()));
            }
            for skip in &results.skips {
                if let Some(pair) = skip.name.split_once('.') {
                    accounted.insert(pair);
                }
            }
        }
        let mut stale: Vec<&str> = self
            .snapshots
            .stored
            .iter()
            .filter(|s| !accounted.contains(&(s.monitor.as_str(), s.scenario.as_str())))
            .map(|s| s.path.as_str())
            .collect();
        stale.extend(self.snapshots.stale_variants.iter().flatten().map(String::as_str));
        stale.sort_unstable();
        stale.dedup();
        self.problems.clear();
        if !stale.is_empty() && !referenced.is_empty() {
            self.problems.push(format!("unreferenced snapshots: {}", stale.join(", ")));
        }
    }

    /// The exit status: [`crate::report::exit_status`] of the rows, 1 for a run-level problem,
    /// and "nothing passed" only for a complete report.
    pub fn exit_status(&self) -> u8 {
        let (pass, fail, boot_failed, _) = totals(&self.rows);
        if boot_failed > 0 {
            2
        } else if fail > 0 || !self.problems.is_empty() || (pass == 0 && self.is_complete()) {
            1
        } else {
            0
        }
    }

    /// Reads and checks a report file: its format, each row once, each row one the selection
    /// names for a shard the report holds, and every such row present.
    pub fn load(path: &Path) -> Result<Report, ReportFileError> {
        let text = std::fs::read(path).map_err(|source| ReportFileError::Read { path: path.to_owned(), source })?;
        // The format first, so an older or newer report gets that message, not a field error.
        #[derive(Deserialize)]
        struct Version {
            format: Option<u32>,
        }
        let version: Version =
            serde_json::from_slice(&text).map_err(|source| ReportFileError::Parse { path: path.to_owned(), source })?;
        match version.format {
            Some(FORMAT) => {}
            Some(found) => return Err(ReportFileError::Format { path: path.to_owned(), found }),
            None => {
                return Err(ReportFileError::Invalid {
                    path: path.to_owned(),
                    problem: "no `format` field (a report from before sharding, or not a report)".to_owned(),
                })
            }
        }
        let mut report: Report =
            serde_json::from_slice(&text).map_err(|source| ReportFileError::Parse { path: path.to_owned(), source })?;
        report.check().map_err(|problem| ReportFileError::Invalid { path: path.to_owned(), problem })?;
        report.judge_run();
        Ok(report)
    }

    /// The consistency [`Report::load`] requires, as a message.
    pub fn check(&self) -> Result<(), String> {
        let count = self.selection.shards;
        if count == 0 {
            return Err("selection split into 0 shards".to_owned());
        }
        if self.shards.is_empty() {
            return Err("holds no shard".to_owned());
        }
        if !self.shards.windows(2).all(|w| w[0] < w[1]) || self.shards.iter().any(|&s| s == 0 || s > count) {
            return Err(format!("shards {:?} are not distinct ascending numbers from 1 to {count}", self.shards));
        }
        let mut planned = BTreeSet::new();
        for p in &self.selection.rows {
            if p.shard == 0 || p.shard > count {
                return Err(format!("selection row {} is in shard {}, outside 1..={count}", p.key(), p.shard));
            }
            if !planned.insert(p.key()) {
                return Err(format!("selection names row {} twice", p.key()));
            }
        }
        let expected: Vec<RowKey> =
            self.selection.rows.iter().filter(|p| self.shards.contains(&p.shard)).map(Planned::key).collect();
        let held: Vec<RowKey> = self.rows.iter().map(Row::key).collect();
        if held != expected {
            let held_set: BTreeSet<_> = held.iter().collect();
            if let Some(twice) = held.iter().enumerate().find(|(i, k)| held[..*i].contains(k)).map(|(_, k)| k) {
                return Err(format!("row {twice} appears twice"));
            }
            if let Some(extra) = held.iter().find(|k| !expected.contains(k)) {
                return Err(format!("row {extra} is not one the selection gives shards {:?}", self.shards));
            }
            if let Some(missing) = expected.iter().find(|k| !held_set.contains(k)) {
                return Err(format!("row {missing} of shards {:?} is missing", self.shards));
            }
            return Err("rows are not in selection order".to_owned());
        }
        Ok(())
    }

    /// Writes `report.json` and `report.md` into `dir` and returns the Markdown.
    pub fn write(&self, dir: &Path) -> std::io::Result<String> {
        let md = crate::report::render::render_markdown(self);
        std::fs::write(dir.join("report.md"), &md)?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        Ok(md)
    }
}

