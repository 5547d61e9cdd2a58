//! Runs one QEMU guest to completion, under a wall-clock limit, and collects what it left.
//!
//! QEMU is started in its own process group so that on timeout the whole group can be killed
//! at once (nothing survives the harness, not even if QEMU ever forks helpers). The console
//! arrives on QEMU's stdout and is handed line by line to a callback (the progress UI) while
//! it is accumulated for splat detection; the results channel is read from its file after
//! QEMU has exited, so it is complete.
//!
//! Which accelerator to use is decided once per run by [`detect_accel`]: a short, bounded
//! KVM boot of the real kernel and initramfs, because on some hosts `/dev/kvm` exists but a
//! KVM guest aborts or hangs, and a hung matrix is worse than a slow one.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::arch::ArchExt as _;
use crate::vm::console::{self, Splat};
use crate::vm::qemu::{Accel, QemuConfig};

/// Errors that prevent a guest run from producing an outcome at all. A guest that panics,
/// hangs or a QEMU that exits with an error are *outcomes*, not errors.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// QEMU could not be started (not installed, not executable).
    #[error("cannot start qemu binary {program} (Debian package {package}; ci/setup.sh installs it)")]
    Spawn {
        program: String,
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A stale results file could not be removed before the boot.
    #[error("cannot clear results file {path}")]
    ClearResults {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The results file exists but could not be read.
    #[error("cannot read results file {path}")]
    ReadResults {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Waiting for or killing the QEMU process failed.
    #[error("cannot supervise qemu process {pid}")]
    Wait {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// How a guest run ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum GuestStatus {
    /// The guest called `reboot(RB_POWER_OFF)`: the normal end of a run.
    PoweredOff,
    /// The kernel panicked (`panic=-1` turned that into a reset, `-no-reboot` into an exit).
    Panicked,
    /// The guest reset without a panic or power-off message (e.g. `reboot(RB_AUTOBOOT)` or a
    /// triple fault). Distinct from `Panicked` so a triple fault is not misreported.
    Rebooted,
    /// The wall-clock limit expired; QEMU's process group was killed.
    TimedOut,
    /// The line callback asked to stop; QEMU's process group was killed.
    Stopped,
    /// QEMU itself failed (bad arguments, missing kernel, accelerator error).
    QemuFailed {
        /// Exit code, or `None` if QEMU died from a signal (e.g. an assertion abort).
        code: Option<i32>,
        /// The tail of QEMU's stderr.
        stderr: String,
    },
}

/// What a guest run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GuestOutcome {
    pub status: GuestStatus,
    /// The whole console (`ttyS0`) as lines joined with `\n`, `\r` removed.
    pub console: String,
    /// The raw bytes the guest wrote to `ttyS1`. Note that the guest tty's default `ONLCR`
    /// turns each `\n` into `\r\n` unless the agent puts the port in raw mode; see
    /// [`GuestOutcome::results_lines`].
    pub results: Vec<u8>,
    /// Kernel splats found in the console.
    pub splats: Vec<Splat>,
    /// Wall time from spawn to QEMU's exit.
    pub wall: Duration,
    pub accel: Accel,
}

impl GuestOutcome {
    /// The last `n` console lines, for error messages about timeouts and failures.
    pub fn console_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The results channel split into lines, with the `\r` a cooked tty adds removed and
    /// empty lines skipped. Suitable for JSON-lines results.
    pub fn results_lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.results)
            .split('\n')
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// What the line callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Kill the guest now; the outcome's status is [`GuestStatus::Stopped`].
    Stop,
}

/// Boots the guest described by `cfg`, calling `on_line` for every console line, and returns
/// when QEMU exits or `timeout` expires.
pub fn run_guest(
    cfg: &QemuConfig,
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<GuestOutcome, RunnerError> {
    run_guest_until(cfg, timeout, |l| {
        on_line(l);
        Flow::Continue
    })
}

/// Like [`run_guest`], but the callback can end the run early by returning [`Flow::Stop`].
pub fn run_guest_until(
    cfg: &QemuConfig,
    timeout: Duration,
    mut on_line: impl FnMut(&str) -> Flow,
) -> Result<GuestOutcome, RunnerError> {
    // A results file left from an earlier run must not be mistaken for this run's output.
    match fs::remove_file(&cfg.results_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(RunnerError::ClearResults {
                path: cfg.results_path.clone(),
                source,
            })
        }
    }

    let program = cfg.program();
    let args = cfg.args();
    tracing::debug!(?program, ?args, accel = %cfg.accel, "starting qemu");
    let start = Instant::now();
    let child = Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // New process group whose id is QEMU's pid, so killpg reaches everything it starts.
        .process_group(0)
        .spawn()
        .map_err(|source| RunnerError::Spawn {
            program: program.to_string_lossy().into_owned(),
            package: cfg.arch.qemu_package(),
            source,
        })?;
    let mut guard = GroupGuard::new(child);

    let stdout = guard.child.stdout.take().expect("stdout is piped");
    let stderr = guard.child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel::<String>();
    let out_thread = thread::spawn(move || read_lines(stdout, tx));
    let err_thread = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.take(1 << 20).read_to_end(&mut buf);
        buf
    });

    let deadline = start + timeout;
    let mut console = String::new();
    let mut ended: Option<GuestStatus> = None; // TimedOut / Stopped, decided here
                                               // Phase 1: stream the console until stdout closes (QEMU exited), the deadline passes, or
                                               // the callback stops us.
    loop {
        let now = Instant::now();
        if now >= deadline {
            ended = Some(GuestStatus::TimedOut);
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(line) => {
                console.push_str(&line);
                console.push('\n');
                if on_line(&line) == Flow::Stop {
                    ended = Some(GuestStatus::Stopped);
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Phase 2: reap QEMU, killing it if we gave up on it.
    let exit = match ended {
        Some(_) => guard.kill_and_reap()?,
        None => match guard.wait_until(deadline)? {
            Some(status) => status,
            None => {
                ended = Some(GuestStatus::TimedOut);
                guard.kill_and_reap()?
            }
        },
    };
    let wall = start.elapsed();
    // QEMU is gone, so its stdout is at EOF: drain whatever the reader still had.
    let _ = out_thread.join();
    for line in rx.try_iter() {
        console.push_str(&line);
        console.push('\n');
    }
    let stderr = err_thread.join().unwrap_or_default();

    let status = match ended {
        Some(s) => s,
        None => classify_exit(exit, &console, &stderr),
    };
    let results = match fs::read(&cfg.results_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(RunnerError::ReadResults {
                path: cfg.results_path.clone(),
                source,
            })
        }
    };
    let splats = console::scan(&console);
    tracing::debug!(?status, ?wall, splats = splats.len(), "guest finished");
    Ok(GuestOutcome {
        status,
        console,
        results,
        splats,
        wall,
        accel: cfg.accel,
    })
}

/// Reads `r` line by line (lossy UTF-8, `\r` stripped) into `tx` until EOF.
fn read_lines(r: impl Read, tx: mpsc::Sender<String>) {
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                // The 8250 console emits "\r\n"; a bare "\r" inside a line is progress noise.
                let line = String::from_utf8_lossy(&buf).replace('\r', "");
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    }
}

/// The tail of QEMU's stderr kept in outcomes.
const STDERR_TAIL: usize = 4096;

fn classify_exit(exit: ExitStatus, console: &str, stderr: &[u8]) -> GuestStatus {
    if !exit.success() {
        let text = String::from_utf8_lossy(stderr);
        let tail_start = text.len().saturating_sub(STDERR_TAIL);
        let tail_start = (tail_start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        return GuestStatus::QemuFailed {
            code: exit.code(),
            stderr: text[tail_start..].trim().to_owned(),
        };
    }
    if console::shows_panic(console) {
        GuestStatus::Panicked
    } else if console::shows_power_off(console) {
        GuestStatus::PoweredOff
    } else {
        GuestStatus::Rebooted
    }
}

/// Owns the QEMU child; kills its whole process group on drop unless it was reaped, so no
/// early return or panic (e.g. in the line callback) can leave a guest running.
struct GroupGuard {
    child: Child,
    reaped: bool,
}

impl GroupGuard {
    fn new(child: Child) -> Self {
        Self {
            child,
            reaped: false,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn killpg(&self) {
        // The group id equals the pid because of `process_group(0)`.
        let pgid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
        let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
        if rc != 0 {
            tracing::debug!(pgid, err = %std::io::Error::last_os_error(), "killpg failed");
        }
    }

    fn kill_and_reap(&mut self) -> Result<ExitStatus, RunnerError> {
        self.killpg();
        let status = self.child.wait().map_err(|source| RunnerError::Wait {
            pid: self.child.id(),
            source,
        })?;
        self.reaped = true;
        Ok(status)
    }

    /// Polls for exit until `deadline`; `None` if QEMU is still running then.
    fn wait_until(&mut self, deadline: Instant) -> Result<Option<ExitStatus>, RunnerError> {
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.reaped = true;
                    // Anything else still in the group (nothing today) goes too.
                    self.killpg();
                    return Ok(Some(s));
                }
                Ok(None) => {}
                Err(source) => {
                    return Err(RunnerError::Wait {
                        pid: self.child.id(),
                        source,
                    })
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !self.reaped {
            self.killpg();
            let _ = self.child.wait();
        }
    }
}

/// How the accelerator for this run was chosen.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccelDetection {
    pub accel: Accel,
    /// Human-readable reason, e.g. "TAPIO_ACCEL=tcg" or "kvm probe timed out after 10s".
    pub reason: String,
    /// Time spent deciding (the KVM probe boot, if any).
    pub took: Duration,
}

/// Wall-clock limit for the KVM probe boot. A working KVM guest reaches `/init` in well under
/// two seconds; a broken one either makes QEMU abort at once or spins without output.
pub const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

static DETECTION: OnceLock<AccelDetection> = OnceLock::new();

/// Chooses KVM or TCG for this process, once; later calls return the cached answer.
///
/// `TAPIO_ACCEL=kvm|tcg` skips the probe. Otherwise, if `/dev/kvm` can be opened read-write,
/// `kernel` is booted with `initrd` under KVM for at most [`KVM_PROBE_TIMEOUT`]; KVM is chosen
/// only if the guest got as far as running `/init` (or ended cleanly). The probe's guest is
/// killed as soon as that is seen, so the initrd's `/init` need not power off quickly.
pub fn detect_accel(kernel: &Path, initrd: &Path) -> Accel {
    DETECTION.get_or_init(|| probe_accel(kernel, initrd)).accel
}

/// The cached detection, if [`detect_accel`] has run, for the report.
pub fn accel_detection() -> Option<&'static AccelDetection> {
    DETECTION.get()
}

fn probe_accel(kernel: &Path, initrd: &Path) -> AccelDetection {
    let start = Instant::now();
    let decide = |accel, reason: String| {
        let d = AccelDetection {
            accel,
            reason,
            took: start.elapsed(),
        };
        tracing::info!(accel = %d.accel, reason = %d.reason, took = ?d.took, "accelerator chosen");
        d
    };
    if let Some(v) = std::env::var_os("TAPIO_ACCEL") {
        match v.to_string_lossy().parse::<Accel>() {
            Ok(a) => return decide(a, format!("TAPIO_ACCEL={a}")),
            Err(e) => tracing::warn!(error = %e, "ignoring TAPIO_ACCEL"),
        }
    }
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return decide(Accel::Tcg, format!("/dev/kvm unusable: {e}"));
    }
    let dir = match tempfile::Builder::new().prefix("tapio-kvm-probe").tempdir() {
        Ok(d) => d,
        Err(e) => return decide(Accel::Tcg, format!("no temp dir for the kvm probe: {e}")),
    };
    let cfg = QemuConfig::new(
        kernel,
        initrd,
        Accel::Kvm,
        dir.path().join("console.log"),
        dir.path().join("results"),
    );
    let outcome = run_guest_until(&cfg, KVM_PROBE_TIMEOUT, |line| {
        if console::strip_timestamp(line).starts_with("Run /init as init process") {
            Flow::Stop
        } else {
            Flow::Continue
        }
    });
    match outcome {
        Ok(o) => match o.status {
            GuestStatus::Stopped | GuestStatus::PoweredOff | GuestStatus::Panicked => {
                decide(Accel::Kvm, format!("kvm guest booted in {:?}", o.wall))
            }
            GuestStatus::TimedOut => decide(
                Accel::Tcg,
                format!(
                    "kvm probe timed out after {:?} with {} console lines",
                    KVM_PROBE_TIMEOUT,
                    o.console.lines().count()
                ),
            ),
            GuestStatus::QemuFailed { code, stderr } => decide(
                Accel::Tcg,
                format!(
                    "qemu failed under kvm (exit {code:?}): {}",
                    stderr.lines().last().unwrap_or("")
                ),
            ),
            GuestStatus::Rebooted => decide(
                Accel::Tcg,
                "kvm guest reset before reaching /init".to_owned(),
            ),
        },
        Err(e) => decide(Accel::Tcg, format!("kvm probe could not run: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(console: &str, results: &[u8]) -> GuestOutcome {
        GuestOutcome {
            status: GuestStatus::PoweredOff,
            console: console.to_owned(),
            results: results.to_vec(),
            splats: Vec::new(),
            wall: Duration::ZERO,
            accel: Accel::Tcg,
        }
    }

    #[test]
    fn tail_and_results_lines() {
        let o = outcome("a\nb\nc\n", b"{\"a\":1}\r\n\r\n{\"b\":2}\r\n");
        assert_eq!(o.console_tail(2), "b\nc");
        assert_eq!(o.console_tail(10), "a\nb\nc");
        assert_eq!(o.results_lines(), ["{\"a\":1}", "{\"b\":2}"]);
    }

    #[test]
    fn exit_classification() {
        use std::os::unix::process::ExitStatusExt;
        let ok = ExitStatus::from_raw(0);
        assert_eq!(
            classify_exit(ok, "[ 1.0] reboot: Power down\n", b""),
            GuestStatus::PoweredOff
        );
        assert_eq!(
            classify_exit(ok, "[ 1.0] Kernel panic - not syncing: x\n", b""),
            GuestStatus::Panicked
        );
        assert_eq!(
            classify_exit(ok, "[ 1.0] reboot: Restarting system\n", b""),
            GuestStatus::Rebooted
        );
        let abrt = ExitStatus::from_raw(libc::SIGABRT);
        assert_eq!(
            classify_exit(abrt, "", b"qemu: error: failed to set MSR\n"),
            GuestStatus::QemuFailed {
                code: None,
                stderr: "qemu: error: failed to set MSR".into()
            }
        );
        let one = ExitStatus::from_raw(1 << 8);
        assert!(matches!(
            classify_exit(one, "", b"x"),
            GuestStatus::QemuFailed { code: Some(1), .. }
        ));
    }

    #[test]
    fn missing_qemu_binary_is_a_typed_error() {
        // Runs the real spawn path without QEMU: a config pointing at nothing still fails at
        // spawn only if the binary is missing, so use a binary name that cannot exist.
        std::env::set_var("TAPIO_QEMU", "/nonexistent/qemu-for-tapio-tests");
        let dir = tempfile::tempdir().unwrap();
        let cfg = QemuConfig::new(
            "k",
            "i",
            Accel::Tcg,
            dir.path().join("c"),
            dir.path().join("r"),
        );
        let err = run_guest(&cfg, Duration::from_secs(1), |_| {}).unwrap_err();
        std::env::remove_var("TAPIO_QEMU");
        assert!(matches!(err, RunnerError::Spawn { .. }), "{err}");
    }
}
