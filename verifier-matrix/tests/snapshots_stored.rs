//! The stored snapshots as CI checks them: the equivalent of
//! `cargo insta test --require-full-match --unreferenced=reject` for `snapshots/`, which no
//! test of its own produces (the matrix does, in VMs).
//!
//! - No pending file (`.snap.new`) is left: a drift was reviewed, accepted or reverted.
//! - No variant names a kernel the matrix never runs (neither a line of vm-images' lock it
//!   boots nor this host's kernel), and every variant carries its `info.reason`.
//! - Every live snapshot is exactly the insta form the matrix's comparison writes: each is
//!   re-asserted through insta with its own events. Under `cargo insta test` that also marks
//!   it referenced, so `--unreferenced=reject` rejects exactly the stale files, and
//!   `--require-full-match` checks each file's metadata as well.

use std::path::PathBuf;

use verifier_matrix::{kernels::manifest::Lock, matrix::host_release, report::snapshots::live_kernels};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

#[test]
fn stored_snapshots_are_reviewed_live_and_in_insta_form() {
    let ws = workspace();
    let lock = Lock::load(&ws.join("vm-images/kernels.lock")).expect("read vm-images/kernels.lock");
    let live = live_kernels(&lock, host_release().as_deref());
    let audit = tapio_snapshots::audit(&ws, &live);
    assert!(!audit.live.is_empty(), "no snapshots found under {}", ws.join("snapshots").display());
    let problems = audit.problems();
    // Checked before re-asserting, which would clean up a pending file it matched.
    assert!(problems.is_empty(), "stored snapshots (live kernels: {}):\n{}", live.join(", "), problems.join("\n"));
    let failures = tapio_snapshots::reassert(&ws, &audit);
    assert!(failures.is_empty(), "snapshots not in the form the matrix writes:\n{}", failures.join("\n"));
}
