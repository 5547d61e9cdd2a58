//! Skips that a reader sees, and that fail where they must (issue 15, item 11).
//!
//! A test that cannot run returns early, and libtest reports it `ok`. So every skip goes through
//! here: it prints `SKIP <test>: <reason>` and appends the line to the skip log (`TAPIO_SKIP_LOG`,
//! which `make test` sets and prints at the end, so skips are listed where the results are).
//! Under `make test` (`TAPIO_STRICT_SKIPS=1`) only a fact of the kernel excuses a test; a skip
//! for the environment (not root, no test kernel given) fails it instead.
//!
//! Shared by the loader's and the harness's tests (the harness includes this file by path).

#![allow(dead_code, reason = "each test file uses a different part of this module")]

/// Why a test cannot run here.
pub enum Why {
    /// The running kernel lacks what the test needs (a feature, a config option): a fact, never
    /// a failure, but listed.
    Kernel(String),
    /// The machine or the invocation lacks it (privilege, an input): a failure under `make test`.
    Environment(String),
}

/// Reports the skip of `test` and returns true, or panics when the skip is not excused.
pub fn skip(test: &str, why: Why) -> bool {
    let (reason, excused) = match why {
        Why::Kernel(r) => (r, true),
        Why::Environment(r) => (r, std::env::var_os("TAPIO_STRICT_SKIPS").is_none_or(|v| v.is_empty() || v == "0")),
    };
    let line = format!("SKIP {test}: {reason}");
    println!("{line}");
    if let Some(log) = std::env::var_os("TAPIO_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(f, "{line}");
        }
    }
    assert!(excused, "{line}: under `make test` a test may only skip for a fact of the kernel");
    true
}

/// Skips (returns true) when not root: the test loads into the running kernel.
pub fn unless_root(test: &str, needs: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip(test, Why::Environment(format!("needs root ({needs})")));
    }
    false
}
