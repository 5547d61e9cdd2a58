//! Rendering an error with its whole cause chain, and finding the OS error in it.
//!
//! Errors here follow one convention: a message names its noun path, keeps its cause as
//! `#[source]`, and may already quote that cause. aya's errors often do not quote theirs (a
//! `SyscallError` says "`bpf_link_create` failed" and holds the errno as its source), so a report
//! that prints only the top message loses the kernel's answer. [`chain`] prints every cause that
//! the text above it does not already hold; [`errno`] finds the OS error number wherever it is.

use std::error::Error;

/// `error: cause: cause ...` on one line per message line, each cause once.
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = cause.source();
    }
    out
}

/// The OS error number anywhere in the chain (the first, outermost one).
pub fn errno(e: &(dyn Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(n) = err.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) {
            return Some(n);
        }
        cur = err.source();
    }
    None
}

/// Whether the kernel refused for lack of privilege (EPERM or EACCES anywhere in the chain).
pub fn is_permission(e: &(dyn Error + 'static)) -> bool {
    let mut cur: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("monitor x: map events: {0}")]
    struct Quotes(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("`bpf_link_create` failed")]
    struct Silent(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("monitor x: program p: attach: {0}")]
    struct Outer(#[source] Silent);

    #[test]
    fn every_cause_once_and_the_errno_found() {
        let quoted = Quotes(std::io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(chain(&quoted), "monitor x: map events: Operation not permitted (os error 1)");
        let silent = Outer(Silent(std::io::Error::from_raw_os_error(libc::EBUSY)));
        assert_eq!(chain(&silent), "monitor x: program p: attach: `bpf_link_create` failed: Device or resource busy (os error 16)");
        assert_eq!(errno(&silent), Some(libc::EBUSY));
        assert!(is_permission(&quoted));
        assert!(!is_permission(&silent));
    }
}
