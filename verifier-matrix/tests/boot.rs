//! End-to-end proof of the VM half of the harness: a tiny static `/init` packed by our own
//! cpio writer, booted on a real distribution kernel by our runner.
//!
//! Needs a bootable `vmlinuz` in `TAPIO_TEST_KERNEL`; without one every test here reports a SKIP
//! and passes, so `cargo test` stays hermetic on machines without kernels, except under
//! `make test`, which gives it the cached 6.1 kernel and fails a test that skips for lack of one
//! (loader/tests/common/skip.rs).
//! `TAPIO_ACCEL=tcg|kvm` skips the KVM probe.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[path = "../../loader/tests/common/skip.rs"]
mod skip;

use verifier_matrix::vm::console::SplatKind;
use verifier_matrix::vm::initramfs::Initramfs;
use verifier_matrix::vm::qemu::QemuConfig;
use verifier_matrix::vm::runner::{accel_detection, detect_accel, run_guest, GuestStatus};

/// Boots are serialised: parallel TCG guests on a small host would skew the measured boot
/// times and could push a healthy guest past its timeout.
static BOOT_LOCK: Mutex<()> = Mutex::new(());

fn test_kernel(test: &str) -> Option<PathBuf> {
    match std::env::var_os("TAPIO_TEST_KERNEL") {
        Some(k) if !k.is_empty() => Some(PathBuf::from(k)),
        _ => {
            skip::skip(test, skip::Why::Environment("no kernel (set TAPIO_TEST_KERNEL)".to_owned()));
            None
        }
    }
}

/// Compiles `tests/fixtures/tiny_init.rs` for musl in the given mode.
fn build_init(dir: &Path, mode: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_init.rs");
    let out = dir.join(format!("init-{mode}"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--target",
            "x86_64-unknown-linux-musl",
            "-C",
            "opt-level=1",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
            "--cfg",
        ])
        .arg(format!("mode=\"{mode}\""))
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("run rustc");
    assert!(
        status.success(),
        "compiling {} for musl failed",
        src.display()
    );
    out
}

/// Builds the initramfs for `mode` in `dir` and returns its path.
fn build_initrd(dir: &Path, mode: &str) -> PathBuf {
    let init = build_init(dir, mode);
    let initrd = dir.join(format!("initrd-{mode}.cpio"));
    Initramfs::new()
        .dir("/dev", 0o755)
        .char_dev("/dev/console", 0o600, 5, 1)
        .file_from_path("/init", &init, 0o755)
        .expect("read init")
        .write_to(&initrd)
        .expect("write initrd");
    initrd
}

/// Pids of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

#[test]
fn boot_tiny_init() {
    let Some(kernel) = test_kernel("boot_tiny_init") else {
        return;
    };
    let _lock = BOOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let initrd = build_initrd(dir.path(), "poweroff");

    let t = Instant::now();
    let accel = detect_accel(&kernel, &initrd);
    let det = accel_detection().unwrap();
    println!(
        "accel: {accel} ({}; detection took {:?}, this call {:?})",
        det.reason,
        det.took,
        t.elapsed()
    );

    let cfg = QemuConfig::new(
        &kernel,
        &initrd,
        accel,
        dir.path().join("console.log"),
        dir.path().join("results"),
    );
    let mut lines = 0usize;
    let out = run_guest(&cfg, Duration::from_secs(120), |_| lines += 1).unwrap();
    println!(
        "boot_tiny_init: {:?} in {:?} under {}",
        out.status, out.wall, out.accel
    );
    assert_eq!(
        out.status,
        GuestStatus::PoweredOff,
        "console tail:\n{}",
        out.console_tail(30)
    );
    assert_eq!(out.results_lines(), ["{\"hello\":1}"]);
    assert!(out.results.starts_with(b"{\"hello\":1}"));
    assert!(out.splats.is_empty(), "{:#?}", out.splats);
    assert!(out.console.contains("tiny_init: powering off"));
    assert_eq!(
        lines,
        out.console.lines().count(),
        "callback saw every console line"
    );
    // QEMU's own console log matches what we streamed.
    let logged = std::fs::read_to_string(&cfg.console_path).unwrap();
    assert!(logged.contains("reboot: Power down"));
}

#[test]
fn boot_timeout_kills_qemu() {
    let Some(kernel) = test_kernel("boot_timeout_kills_qemu") else {
        return;
    };
    let _lock = BOOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let initrd = build_initrd(dir.path(), "hang");
    let accel = detect_accel(&kernel, &initrd);
    let cfg = QemuConfig::new(
        &kernel,
        &initrd,
        accel,
        dir.path().join("console.log"),
        dir.path().join("results"),
    );
    // Long enough to reach /init under TCG, far shorter than "forever".
    let limit = Duration::from_secs(15);
    let out = run_guest(&cfg, limit, |_| {}).unwrap();
    println!(
        "boot_timeout_kills_qemu: {:?} after {:?}",
        out.status, out.wall
    );
    assert_eq!(out.status, GuestStatus::TimedOut);
    assert!(
        out.wall >= limit && out.wall < limit + Duration::from_secs(5),
        "{:?}",
        out.wall
    );
    assert!(
        out.console_tail(5)
            .contains("tiny_init: hanging on purpose"),
        "{}",
        out.console_tail(20)
    );
    let needle = initrd.to_string_lossy().into_owned();
    let left = processes_mentioning(&needle);
    assert!(left.is_empty(), "qemu still running: {left:?}");
}

#[test]
fn boot_init_exit_panics() {
    let Some(kernel) = test_kernel("boot_init_exit_panics") else {
        return;
    };
    let _lock = BOOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let initrd = build_initrd(dir.path(), "exit");
    let accel = detect_accel(&kernel, &initrd);
    let cfg = QemuConfig::new(
        &kernel,
        &initrd,
        accel,
        dir.path().join("console.log"),
        dir.path().join("results"),
    );
    let out = run_guest(&cfg, Duration::from_secs(120), |_| {}).unwrap();
    println!("boot_init_exit_panics: {:?} in {:?}", out.status, out.wall);
    assert_eq!(
        out.status,
        GuestStatus::Panicked,
        "console tail:\n{}",
        out.console_tail(30)
    );
    let panic = out
        .splats
        .iter()
        .find(|s| s.kind == SplatKind::Panic)
        .expect("a panic splat");
    assert!(
        panic.first_line.contains("Attempted to kill init"),
        "{}",
        panic.first_line
    );
    assert!(out.results.is_empty());
}
