//! Checks, before anything is loaded, that the process may load BPF programs at all.
//!
//! Without this a missing capability surfaces as a bare EPERM from the first map creation; the
//! check turns it into one line that says what to grant.

use thiserror::Error;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The process lacks what loading needs.
#[derive(Debug, Error)]
#[error(
    "insufficient privileges: loading BPF programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); \
     run as root or grant them (effective capabilities: {effective:#x})"
)]
pub struct PrivilegeError {
    pub effective: u64,
}

/// The effective capability set of this process, from `/proc/self/status`.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Ok when the effective set allows BPF loads: CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON.
pub fn check() -> Result<(), PrivilegeError> {
    let effective = effective_caps();
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(PrivilegeError { effective })
    }
}

/// Lifts RLIMIT_MEMLOCK: kernels before 5.11 charge BPF maps to it and refuse maps with EPERM.
pub fn raise_memlock() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("setrlimit(RLIMIT_MEMLOCK): {}", std::io::Error::last_os_error());
    }
}
