//! The matrix report, by role: [`results`] reads what the guest agent sent (the typed
//! protocol; a line it does not understand is kept as malformed), [`judge`] decides each row's
//! verdict, [`render`] writes the Markdown, and [`snapshots`] says which stored snapshots every
//! row must account for. This module holds what they share: the row, its verdict and the totals,
//! which never count a skip as a pass.

pub mod document;
pub mod judge;
pub mod merge;
pub mod render;
pub mod results;
pub mod snapshots;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{arch::Arch, report::results::GuestResults, vm::console::Splat};

/// The verdict of one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// A row's identity: its kernel's architecture and line. The report holds each key once; a
/// merge of shard reports refuses a key that two of them hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RowKey {
    pub arch: Arch,
    pub line: String,
}

impl std::fmt::Display for RowKey {
    /// `x86_64/6.1`, `arm64/6.12`, `x86_64/host`: the line (a kernel id, which already names an
    /// architecture other than x86_64) under its architecture, once.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix = format!("{}/", self.arch);
        match self.line.starts_with(&prefix) {
            true => f.write_str(&self.line),
            false => write!(f, "{prefix}{}", self.line),
        }
    }
}

/// One kernel's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// The kernel's name: its [`crate::kernels::manifest::LockedKernel::id`] (`6.1`,
    /// `arm64/6.12`), `host`, or the name of a user-supplied kernel.
    pub line: String,
    /// The architecture the row ran on.
    pub arch: Arch,
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

impl Row {
    pub fn key(&self) -> RowKey {
        RowKey { arch: self.arch, line: self.line.clone() }
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|secs| Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// The first line of a detail text, for one-line reasons.
pub(crate) fn first_line(s: &str) -> &str {
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

/// The exit status of a matrix run: 2 when a kernel did not boot, told apart from 1 when one
/// booted but a probe failed to load or attach, a check failed or nothing passed; 0 otherwise.
/// (`xtask` exits 3 when the harness itself failed.) [`document::Report::exit_status`] adds
/// the run's own problems and says when "nothing passed" applies to a shard.
pub fn exit_status(rows: &[Row]) -> u8 {
    let (pass, fail, boot_failed, _) = totals(rows);
    if boot_failed > 0 {
        2
    } else if fail > 0 || pass == 0 {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn row(verdict: Verdict) -> Row {
        Row { line: "x".into(), arch: crate::arch::Arch::X86_64, release: None, accel: None, wall: None, verdict, results: None, splats: vec![], console_tail: None }
    }

    #[rstest]
    #[case::all_pass(vec![Verdict::Pass, Verdict::Unavailable("no package".into())], 0)]
    #[case::probe_failed_to_load(vec![Verdict::Pass, Verdict::Fail("verifier rejected dns/dns_recv".into())], 1)]
    #[case::nothing_passed(vec![Verdict::Unavailable("no package".into())], 1)]
    #[case::vm_did_not_boot(vec![Verdict::Pass, Verdict::BootFailed("kernel panic".into())], 2)]
    #[case::boot_failure_wins(vec![Verdict::Fail("check".into()), Verdict::BootFailed("timeout".into())], 2)]
    fn a_boot_failure_exits_apart_from_a_load_failure(#[case] verdicts: Vec<Verdict>, #[case] status: u8) {
        let rows: Vec<Row> = verdicts.into_iter().map(row).collect();
        assert_eq!(exit_status(&rows), status);
    }
}
