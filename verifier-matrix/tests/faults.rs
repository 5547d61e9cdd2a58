//! The harness under faults: a program the verifier rejects, a kernel that panics, a guest that
//! hangs. Each is reported as what it is, with its evidence, and the rest of the run (the host
//! row here) goes on and passes. The kernel is a user-supplied `--kernel-file`, which proves that
//! path runs the same checks too.
//!
//! Needs `TAPIO_TEST_KERNEL` (a vmlinuz; `make test` points it at the cached 6.1 kernel) and root.

#[path = "../../loader/tests/common/skip.rs"]
mod skip;

use std::{path::PathBuf, sync::Mutex, time::Duration};

use verifier_matrix::{
    arch::ArchFilter,
    kernels::shard::Shard,
    matrix::{self, Fault, Options, Selection},
    report::{Row, Verdict},
    ui::Ui,
};

/// One fault run at a time: each boots QEMU and builds the guest agent.
static SERIAL: Mutex<()> = Mutex::new(());

fn kernel() -> Option<PathBuf> {
    std::env::var_os("TAPIO_TEST_KERNEL").map(PathBuf::from).filter(|p| p.exists())
}

/// The kernel's modules where a package unpacks them beside it (`<root>/boot/vmlinuz-<release>`,
/// `<root>/lib/modules/<release>`): the veth scenarios need the veth module, and a kernel that
/// has veth (CONFIG_VETH=m) yet skips them for want of the module fails its row (the skip judge).
fn modules_beside(kernel: &std::path::Path) -> Option<PathBuf> {
    let release = kernel.file_name()?.to_str()?.strip_prefix("vmlinuz-")?;
    let dir = kernel.parent()?.parent()?.join("lib/modules").join(release);
    dir.is_dir().then_some(dir)
}

fn run(test: &str, fault: Option<Fault>, timeout: Duration) -> Option<Vec<Row>> {
    let Some(kernel) = kernel() else {
        skip::skip(test, skip::Why::Environment("no kernel (set TAPIO_TEST_KERNEL)".to_owned()));
        return None;
    };
    if skip::unless_root(test, "the host row loads into this kernel") {
        return None;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
    let out_dir = tempfile::tempdir().unwrap().keep();
    let options = Options {
        workspace,
        selection: Selection::Lines(vec!["host".to_owned()]),
        jobs: 1,
        timeout,
        modules: modules_beside(&kernel),
        kernel_file: Some(kernel),
        kernel_deb: None,
        out_dir,
        accept_snapshots: false,
        fault,
        arch: ArchFilter::All,
        shard: Shard::WHOLE,
    };
    let ui = Ui::start(false);
    let rows = matrix::run(&options, &ui).expect("the matrix runs");
    ui.finish();
    assert_eq!(rows.len(), 2, "the user kernel and the host: {rows:#?}");
    assert_eq!(rows[1].line, "host");
    assert_eq!(rows[1].verdict, Verdict::Pass, "the host row goes on and passes: {:#?}", rows[1]);
    Some(rows)
}

#[test]
fn kernel_file_runs_the_same_checks() {
    let Some(rows) = run("kernel_file_runs_the_same_checks", None, Duration::from_secs(180)) else { return };
    assert_eq!(rows[0].verdict, Verdict::Pass, "{:#?}", rows[0]);
    let results = rows[0].results.as_ref().expect("results");
    assert!(results.checks.iter().any(|c| c.name == "process.leaf" && c.pass));
}

#[test]
fn rejected_program_is_reported_with_the_log() {
    let Some(rows) = run("rejected_program_is_reported_with_the_log", Some(Fault::Rejected), Duration::from_secs(180))
    else {
        return;
    };
    let Verdict::Fail(why) = &rows[0].verdict else { panic!("expected a failed row: {:#?}", rows[0]) };
    assert!(why.contains("fixture/fixture_rejected"), "{why}");
    assert!(why.contains("verifier log (tail)") && why.contains("map_value_or_null"), "{why}");
    // Everything else on that kernel still ran and passed.
    let results = rows[0].results.as_ref().expect("results");
    assert!(results.done && results.checks.iter().all(|c| c.pass), "{results:#?}");
}

#[test]
fn panicking_kernel_is_reported() {
    let Some(rows) = run("panicking_kernel_is_reported", Some(Fault::Panic), Duration::from_secs(120)) else { return };
    assert_eq!(rows[0].verdict, Verdict::BootFailed("kernel panic".to_owned()), "{:#?}", rows[0]);
    assert!(rows[0].console_tail.as_deref().is_some_and(|t| t.contains("Kernel panic")), "{:#?}", rows[0]);
}

#[test]
fn hanging_guest_is_timed_out() {
    let timeout = Duration::from_secs(30);
    let Some(rows) = run("hanging_guest_is_timed_out", Some(Fault::Hang), timeout) else { return };
    assert!(matches!(&rows[0].verdict, Verdict::BootFailed(why) if why.contains("no power-off within")), "{:#?}", rows[0]);
    let wall = rows[0].wall.expect("wall time");
    assert!(wall >= timeout && wall < timeout + Duration::from_secs(15), "stopped after {wall:?}");
}
