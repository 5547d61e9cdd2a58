//! Skips that a reader sees, and that fail where they must (issue 15, items 9 and 11).
//!
//! A test that cannot run returns early, and libtest reports it `ok`. So every skip goes through
//! here: it prints `SKIP <test>: <reason>` and appends the line to the skip log (`TAPIO_SKIP_LOG`,
//! which `make test` sets and prints at the end, so skips are listed where the results are).
//!
//! A skip for the kernel names the features the test needs and carries the judge's answer
//! ([`tapio_kernel_gates::judge`]) for the running kernel: it stands only when the kernel
//! explains it (older than the feature, the feature's config off, or its probe refused as root),
//! and the line names the explanation; on a kernel that should have the feature it fails the
//! test, always (cilium/ebpf's `checkVersion`). Under `make test` (`TAPIO_STRICT_SKIPS=1`) a skip
//! for the environment (not root, no test kernel given) fails too.
//!
//! Shared by the loader's and the harness's tests (the harness includes this file by path), so
//! it judges with facts it is given and probes nothing itself.

#![allow(dead_code, reason = "each test file uses a different part of this module")]

use tapio_kernel_gates::{judge, Judgement, KernelFacts, Needs};

/// Why a test cannot run here.
pub enum Why {
    /// The running kernel lacks what the test needs: a skip when the kernel explains it, a
    /// failure when it does not. Made by [`Why::kernel`].
    Kernel { reason: String, judgement: Judgement },
    /// The machine or the invocation lacks it (privilege, an input): a failure under `make test`.
    Environment(String),
}

impl Why {
    /// A skip for want of `needs`, judged against `facts` of the running kernel.
    pub fn kernel(reason: impl Into<String>, needs: &Needs, facts: &KernelFacts) -> Self {
        Self::Kernel { reason: reason.into(), judgement: judge(needs, facts) }
    }
}

/// Reports the skip of `test` and returns true, or panics when the skip is not excused.
pub fn skip(test: &str, why: Why) -> bool {
    let (line, excused) = match why {
        Why::Kernel { reason, judgement } => (format!("SKIP {test}: {reason} ({judgement})"), judgement.is_explained()),
        Why::Environment(r) => (
            format!("SKIP {test}: {r}"),
            std::env::var_os("TAPIO_STRICT_SKIPS").is_none_or(|v| v.is_empty() || v == "0"),
        ),
    };
    println!("{line}");
    if let Some(log) = std::env::var_os("TAPIO_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(f, "{line}");
        }
    }
    assert!(
        excused,
        "{line}: a test may only skip for a fact of the kernel that explains it (and under `make test`, only for one)"
    );
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
