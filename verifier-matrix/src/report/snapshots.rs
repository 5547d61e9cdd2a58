//! The matrix's side of the snapshots: which stored scenarios every row must account for, and
//! which kernels may have a variant. Comparing and writing is `tapio_snapshots` (insta); see
//! that crate's doc for the files, the variants and their reasons, and the pending entries a
//! drift leaves for `cargo insta review`.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

pub use tapio_snapshots::{compare, pending_path, snap_path, variant_path, SnapshotError};

use crate::kernels::manifest::{line_version, Lock};

/// The kernels a snapshot variant may name: the version of every manifest line the matrix boots
/// (a default line, or one resolved to a pinned package or file) and the host's `major.minor`.
/// A variant for any other kernel is unreferenced.
pub fn live_kernels(lock: &Lock, host_release: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = lock
        .kernels
        .iter()
        .filter(|k| k.default || k.unavailable_reason().is_none())
        .map(|k| line_version(&k.line).to_owned())
        .collect();
    out.extend(host_release.and_then(release_key));
    out.sort();
    out.dedup();
    out
}

/// `major.minor` of a kernel release string (`6.1.0-50-rt-amd64` is `6.1`).
pub fn release_key(release: &str) -> Option<String> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some(format!("{}.{}", parts.next().filter(|p| !p.is_empty())?, parts.next().filter(|p| !p.is_empty())?))
}

/// Every stored snapshot file (`.snap`), with its monitor and scenario: a per-kernel variant
/// (`<scenario>@<kernel>.snap`) belongs to its scenario.
fn stored_files(workspace: &Path) -> Vec<(String, String, PathBuf)> {
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
            let scenario = stem.split_once('@').map_or(stem.as_str(), |(s, _)| s).to_owned();
            out.push((monitor.clone(), scenario, path));
        }
    }
    out
}

/// Every (monitor, scenario) with a stored snapshot, shared or per-kernel: what every row must
/// produce or skip with the kernel's reason.
pub fn stored_scenarios(workspace: &Path) -> BTreeSet<(String, String)> {
    stored_files(workspace).into_iter().map(|(monitor, scenario, _)| (monitor, scenario)).collect()
}

/// Stored snapshots no scenario produced in this run.
pub fn unreferenced(workspace: &Path, referenced: &BTreeSet<(String, String)>) -> Vec<PathBuf> {
    stored_files(workspace)
        .into_iter()
        .filter(|(monitor, scenario, _)| !referenced.contains(&(monitor.clone(), scenario.clone())))
        .map(|(_, _, path)| path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_and_the_booted_lines_are_live() {
        let lock = Lock::parse(
            "[[kernel]]\nline = \"4.19\"\ndefault = false\nunavailable = \"gone\"\n\n[[kernel]]\nline = \"6.1-rt\"\ndefault = true\nunavailable = \"x\"\n",
            Path::new("kernels.lock"),
            PathBuf::new(),
        )
        .unwrap();
        assert_eq!(live_kernels(&lock, Some("6.18.44-fc-v1300")), vec!["6.1".to_owned(), "6.18".to_owned()]);
        assert_eq!(release_key("6.1.0-50-rt-amd64").as_deref(), Some("6.1"));
        assert_eq!(release_key("weird"), None);
    }
}
