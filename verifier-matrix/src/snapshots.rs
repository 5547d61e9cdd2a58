//! Snapshot checks of decoded events: one `snapshots/<monitor>/<scenario>.snap` shared by every
//! kernel, in insta's file format so `cargo insta review` handles the `.snap.new` files written
//! on drift.
//!
//! Where a kernel legitimately differs, `snapshots/<monitor>/<scenario>@<kernel-line>.snap` holds
//! that kernel's events, and its header must say why (`info: reason: ...`): a difference is
//! explained where it is stored, never absorbed by loosening the shared snapshot.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
};

const HEADER: &str = "---\nsource: verifier-matrix/src/snapshots.rs\nexpression: events\n---\n";

/// The snapshot file of one (monitor, scenario).
pub fn snap_path(workspace: &Path, monitor: &str, scenario: &str) -> PathBuf {
    workspace.join("snapshots").join(monitor).join(format!("{scenario}.snap"))
}

/// The per-kernel variant of one (monitor, scenario): used instead of the shared file when present.
pub fn variant_path(workspace: &Path, monitor: &str, scenario: &str, kernel: &str) -> PathBuf {
    workspace.join("snapshots").join(monitor).join(format!("{scenario}@{kernel}.snap"))
}

/// The `reason:` of a variant's header, if it has a non-empty one.
fn variant_reason(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("---\n")?;
    let header = &rest[..rest.find("\n---\n")?];
    header
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("reason:"))
        .map(|r| r.trim().trim_matches('"'))
        .filter(|r| !r.is_empty())
}

/// The header of `text`, kept when a variant is rewritten so its reason stays.
fn stored_header(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("---\n")?;
    rest.find("\n---\n").map(|i| &text[..i + 4 + 5])
}

/// The stored body: everything after insta's YAML header.
fn stored_body(text: &str) -> &str {
    let rest = text.strip_prefix("---\n").unwrap_or(text);
    match rest.find("\n---\n") {
        Some(i) => &rest[i + 5..],
        None => text,
    }
}

fn diff(old: &str, new: &str) -> String {
    let mut out = String::new();
    for change in similar::TextDiff::from_lines(old, new).iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => '-',
            similar::ChangeTag::Insert => '+',
            similar::ChangeTag::Equal => ' ',
        };
        let _ = write!(out, "{sign}{change}");
    }
    out
}

/// Compares `body` with the stored snapshot. On drift (or no snapshot yet) writes `.snap.new`
/// beside it, or with `accept` rewrites the `.snap`, and returns the readable difference.
pub fn compare(workspace: &Path, kernel: &str, monitor: &str, scenario: &str, body: &str, accept: bool) -> Result<(), String> {
    let variant = variant_path(workspace, monitor, scenario, kernel);
    let variant_text = std::fs::read_to_string(&variant).ok();
    let path = if variant_text.is_some() { variant.clone() } else { snap_path(workspace, monitor, scenario) };
    if let Some(text) = &variant_text {
        if variant_reason(text).is_none() {
            return Err(format!("snapshot {monitor}/{scenario}: variant {} has no `reason:` in its header", variant.display()));
        }
    }
    let name = if variant_text.is_some() { format!("{monitor}/{scenario}@{kernel}") } else { format!("{monitor}/{scenario}") };
    let body = format!("{}\n", body.trim_end());
    let stored = variant_text.or_else(|| std::fs::read_to_string(&path).ok());
    if stored.as_deref().map(stored_body) == Some(body.as_str()) {
        return Ok(());
    }
    let target = if accept { path.clone() } else { path.with_extension("snap.new") };
    if let Some(dir) = target.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let header = stored.as_deref().and_then(stored_header).unwrap_or(HEADER);
    let _ = std::fs::write(&target, format!("{header}{body}"));
    if accept {
        return Ok(());
    }
    Err(match stored {
        None => format!("snapshot {name}: none stored yet (kernel {kernel}); wrote {}", target.display()),
        Some(old) => format!(
            "snapshot {name} drifted on kernel {kernel} (review: cargo insta review; new: {}; a legitimate kernel difference goes in {} with a `reason:`):\n{}",
            target.display(),
            variant.display(),
            diff(stored_body(&old), &body)
        ),
    })
}

/// Every (monitor, scenario) with a stored snapshot, shared or per-kernel: what every row must
/// produce or skip with the kernel's reason.
pub fn stored_scenarios(workspace: &Path) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let Ok(monitors) = std::fs::read_dir(workspace.join("snapshots")) else { return out };
    for m in monitors.flatten().filter(|d| d.path().is_dir()) {
        let monitor = m.file_name().to_string_lossy().into_owned();
        for f in std::fs::read_dir(m.path()).into_iter().flatten().flatten() {
            let path = f.path();
            if path.extension().and_then(|e| e.to_str()) != Some("snap") {
                continue;
            }
            let stem = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            out.insert((monitor.clone(), stem.split_once('@').map_or(stem.as_str(), |(s, _)| s).to_owned()));
        }
    }
    out
}

/// Stored snapshots no scenario produced in this run.
pub fn unreferenced(workspace: &Path, referenced: &BTreeSet<(String, String)>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(monitors) = std::fs::read_dir(workspace.join("snapshots")) else { return out };
    for m in monitors.flatten().filter(|d| d.path().is_dir()) {
        let monitor = m.file_name().to_string_lossy().into_owned();
        for f in std::fs::read_dir(m.path()).into_iter().flatten().flatten() {
            let path = f.path();
            if path.extension().and_then(|e| e.to_str()) != Some("snap") {
                continue;
            }
            let stem = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            // A per-kernel variant belongs to its scenario.
            let scenario = stem.split_once('@').map_or(stem.as_str(), |(s, _)| s).to_owned();
            if !referenced.contains(&(monitor.clone(), scenario)) {
                out.push(path);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_reported_with_a_diff_and_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        compare(dir.path(), "6.1", "process", "s", "[1]", true).unwrap();
        assert!(compare(dir.path(), "6.1", "process", "s", "[1]", false).is_ok());
        let err = compare(dir.path(), "5.10", "process", "s", "[2]", false).unwrap_err();
        assert!(err.contains("drifted on kernel 5.10") && err.contains("-[1]") && err.contains("+[2]"), "{err}");
        assert!(snap_path(dir.path(), "process", "s").with_extension("snap.new").exists());
        let mut seen = BTreeSet::new();
        assert_eq!(unreferenced(dir.path(), &seen).len(), 1);
        seen.insert(("process".to_owned(), "s".to_owned()));
        assert!(unreferenced(dir.path(), &seen).is_empty());
    }

    #[test]
    fn a_kernel_variant_needs_a_reason_and_is_used_for_its_kernel_only() {
        let dir = tempfile::tempdir().unwrap();
        compare(dir.path(), "6.1", "network", "s", "[1]", true).unwrap();
        let variant = variant_path(dir.path(), "network", "s", "5.10");
        std::fs::write(&variant, "---\nsource: x\n---\n[2]\n").unwrap();
        let err = compare(dir.path(), "5.10", "network", "s", "[2]", false).unwrap_err();
        assert!(err.contains("no `reason:`"), "{err}");
        std::fs::write(&variant, "---\nsource: x\ninfo:\n  reason: \"old layout\"\n---\n[2]\n").unwrap();
        assert!(compare(dir.path(), "5.10", "network", "s", "[2]", false).is_ok());
        assert!(compare(dir.path(), "6.1", "network", "s", "[1]", false).is_ok());
        let err = compare(dir.path(), "5.10", "network", "s", "[3]", false).unwrap_err();
        assert!(err.contains("network/s@5.10 drifted on kernel 5.10"), "{err}");
        let mut seen = BTreeSet::new();
        seen.insert(("network".to_owned(), "s".to_owned()));
        assert!(unreferenced(dir.path(), &seen).is_empty());
    }
}
