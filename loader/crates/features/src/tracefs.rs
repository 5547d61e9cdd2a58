//! Makes sure tracefs is mounted: classic tracepoints are attached by the id tracefs publishes.
//!
//! Many minimal hosts and every initramfs boot without it mounted. Mounting it ourselves, as
//! root, is what an operator would do by hand; if that fails the error says so plainly.

use std::{ffi::CString, path::Path};

use thiserror::Error;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// tracefs is not available and could not be mounted.
#[derive(Debug, Error)]
#[error("tracefs: not mounted at {TRACEFS} and mounting it failed: {0}; mount it (mount -t tracefs nodev {TRACEFS}) or run as root")]
pub struct TracefsError(#[source] std::io::Error);

/// Whether tracefs's `events/` is visible at either of its usual places.
pub fn mounted() -> bool {
    Path::new(TRACEFS).join("events").is_dir() || Path::new(DEBUGFS_TRACING).join("events").is_dir()
}

/// Ok when tracefs is (now) mounted. Every path that attaches a classic tracepoint or looks one
/// up calls this first (tapio-runtime's `monitors::load`, `check`, `plan`, `run`), so a library caller
/// needs no set-up of its own. Serialized: two threads loading monitors at once mount it once.
pub fn ensure_mounted() -> Result<(), TracefsError> {
    static MOUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MOUNTING.lock().unwrap_or_else(|e| e.into_inner());
    if mounted() {
        return Ok(());
    }
    let source = CString::new("tracefs").expect("no NUL");
    let target = CString::new(TRACEFS).expect("no NUL");
    // SAFETY: all pointers are valid NUL-terminated strings or null for the data argument.
    let rc = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), source.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(TracefsError(std::io::Error::last_os_error()));
    }
    tracing::info!("mounted tracefs at {TRACEFS}");
    Ok(())
}
