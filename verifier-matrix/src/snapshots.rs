//! Snapshot checks of decoded events: one `snapshots/<monitor>/<scenario>.snap` shared by every
//! kernel, in insta's file format so `cargo insta review` handles the `.snap.new` files written
//! on drift.

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
    let path = snap_path(workspace, monitor, scenario);
    let body = format!("{}\n", body.trim_end());
    let stored = std::fs::read_to_string(&path).ok();
    if stored.as_deref().map(stored_body) == Some(body.as_str()) {
        return Ok(());
    }
    let target = if accept { path.clone() } else { path.with_extension("snap.new") };
    if let Some(dir) = target.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&target, format!("{HEADER}{body}"));
    if accept {
        return Ok(());
    }
    Err(match stored {
        None => format!("snapshot {monitor}/{scenario}: none stored yet (kernel {kernel}); wrote {}", target.display()),
        Some(old) => format!(
            "snapshot {monitor}/{scenario} drifted on kernel {kernel} (review: cargo insta review; new: {}):\n{}",
            target.display(),
            diff(stored_body(&old), &body)
        ),
    })
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
            let scenario = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
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
}
