//! The review walk-through (issue 16, item 4): a snapshot breaks, the matrix's comparison
//! (`verifier_matrix::report::snapshots::compare`, the function `check_snapshots` calls for every row)
//! runs on recorded events, `cargo insta pending-snapshots` lists what it left, one entry per
//! drifted kernel, `cargo insta accept` accepts it, and the comparison passes again.
//!
//! Works on a copy of the workspace's `snapshots/` package in a temporary workspace, so the
//! repository is never touched. Needs `cargo-insta` (ci/setup.sh installs it).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use verifier_matrix::report::snapshots::{compare, pending_path, snap_path, variant_path, SnapshotError};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// A workspace whose only member is a copy of `snapshots/`, with the real lock and insta config.
fn temp_workspace() -> tempfile::TempDir {
    let ws = workspace();
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::read_to_string(ws.join("Cargo.toml")).unwrap();
    let root: String = root
        .lines()
        .map(|l| if l.starts_with("members") || l.starts_with("default-members") { format!("{} = [\"snapshots\"]", l.split(" =").next().unwrap()) } else { l.to_owned() })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.path().join("Cargo.toml"), root + "\n").unwrap();
    std::fs::copy(ws.join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
    copy_dir(&ws.join(".config"), &dir.path().join(".config"));
    copy_dir(&ws.join("snapshots"), &dir.path().join("snapshots"));
    dir
}

/// `cargo insta <args> --workspace-root <ws>`: its stdout, or a panic with what it said.
fn cargo_insta(ws: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .arg("insta")
        .args(args)
        .arg("--workspace-root")
        .arg(ws)
        .env_remove("INSTA_UPDATE")
        .env_remove("INSTA_FORCE_PASS")
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cargo insta {}: {}\n{stderr}\n(cargo-insta is installed by ci/setup.sh)",
        args.join(" "),
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &stderr
}

/// The entries `cargo insta pending-snapshots` lists (indented under "Pending snapshots:").
fn pending_entries(listed: &str) -> Vec<&str> {
    let mut entries: Vec<&str> = listed
        .lines()
        .skip_while(|l| !l.starts_with("Pending snapshots:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    entries.sort_unstable();
    entries
}

/// The events stored in a snapshot: what the guest recorded when it was accepted.
fn recorded(path: &Path) -> String {
    insta::Snapshot::from_file(path).unwrap().contents().as_text().unwrap().to_string()
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// A variant breaks: its kernel's drift is one pending entry that keeps the variant's reason;
/// accepted with `cargo insta accept`, the comparison passes and the file is as it was.
#[test]
fn a_broken_variant_is_listed_accepted_and_passes_again() {
    let tmp = temp_workspace();
    let ws = tmp.path();
    let variant = variant_path(ws, "network", "tcp_loopback", "6.1");
    let original = std::fs::read_to_string(&variant).unwrap();
    let events = recorded(&variant);
    compare(ws, "6.1", "network", "tcp_loopback", &events, false).expect("the stored variant matches its own events");
    assert!(cargo_insta(ws, &["pending-snapshots"]).contains("No pending snapshots"));

    edit(&variant, "\"bytes_received\": 101", "\"bytes_received\": 999");
    let err = compare(ws, "6.1", "network", "tcp_loopback", &events, false).unwrap_err();
    assert!(matches!(err, SnapshotError::Drifted { .. }), "{err}");
    assert!(err.to_string().contains("-    \"bytes_received\": 999"), "{err}");
    assert!(pending_path(&variant).exists());

    let listed = cargo_insta(ws, &["pending-snapshots"]);
    assert_eq!(pending_entries(&listed), ["snapshots/network/tcp_loopback@6.1.snap"], "{listed}");
    // What `cargo insta review` shows for it: the kernel's pending snapshot, its reason kept.
    let shown = cargo_insta(ws, &["show", pending_path(&variant).to_str().unwrap()]);
    assert!(shown.contains("Before 6.18 the kernel traces") && shown.contains("\"bytes_received\": 101"), "{shown}");

    cargo_insta(ws, &["accept"]);
    assert!(!pending_path(&variant).exists());
    compare(ws, "6.1", "network", "tcp_loopback", &events, false).expect("accepted: the comparison passes");
    assert_eq!(std::fs::read_to_string(&variant).unwrap(), original, "accepting restored the variant, reason and all");
    assert!(cargo_insta(ws, &["pending-snapshots"]).contains("No pending snapshots"));
}

/// The shared snapshot breaks and two kernels drift: two pending entries, one per kernel, where
/// there used to be one `.snap.new` the last kernel overwrote. Accepted, each is its kernel's
/// variant, which the comparison refuses until it says why the kernel differs.
#[test]
fn a_shared_drift_on_two_kernels_is_two_pending_entries() {
    let tmp = temp_workspace();
    let ws = tmp.path();
    let shared = snap_path(ws, "process", "exec_chain");
    let events = recorded(&shared);
    edit(&shared, "\"event\": \"exec\"", "\"event\": \"exec_broken\"");
    for kernel in ["6.1", "6.12"] {
        let err = compare(ws, kernel, "process", "exec_chain", &events, false).unwrap_err();
        assert!(err.to_string().contains(&format!("drifted on kernel {kernel}")), "{err}");
    }
    assert!(!pending_path(&shared).exists(), "no shared .snap.new for the kernels to overwrite");
    let listed = cargo_insta(ws, &["pending-snapshots"]);
    assert_eq!(
        pending_entries(&listed),
        ["snapshots/process/exec_chain@6.1.snap", "snapshots/process/exec_chain@6.12.snap"],
        "{listed}"
    );

    cargo_insta(ws, &["accept"]);
    let err = compare(ws, "6.1", "process", "exec_chain", &events, false).unwrap_err();
    assert!(matches!(err, SnapshotError::NoReason { .. }), "{err}");
}
