//! Advisory file locks (`flock(2)`), so two harness processes on one machine (the shards of a
//! matrix run side by side) never fetch into one kernel cache entry at once, nor write into one
//! output directory. The kernel drops the lock when the file is closed, also when the process
//! dies, so a crashed run never leaves a stale lock behind.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use thiserror::Error;

/// A lock that could not be taken.
#[derive(Debug, Error)]
pub enum LockError {
    #[error("lock {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lock {path}: held by another process (another verifier-matrix run writing here? give it its own --out)")]
    Busy { path: PathBuf },
}

/// An exclusive lock on a file, held until dropped.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock, waiting while another process holds it.
    pub fn exclusive(path: &Path) -> Result<FileLock, LockError> {
        Self::take(path, libc::LOCK_EX)
    }

    /// Takes the lock, or fails at once with [`LockError::Busy`] if another process holds it.
    pub fn try_exclusive(path: &Path) -> Result<FileLock, LockError> {
        Self::take(path, libc::LOCK_EX | libc::LOCK_NB)
    }

    fn take(path: &Path, op: libc::c_int) -> Result<FileLock, LockError> {
        let io = |source| LockError::Io { path: path.to_owned(), source };
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(io)?;
        loop {
            // SAFETY: flock takes a file descriptor this File owns and keeps open.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => return Err(LockError::Busy { path: path.to_owned() }),
                _ => return Err(io(err)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// flock locks belong to the open file description, so a second open in this process
    /// contends as another process would.
    #[test]
    fn a_held_lock_is_busy_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        let held = FileLock::try_exclusive(&path).unwrap();
        assert!(matches!(FileLock::try_exclusive(&path), Err(LockError::Busy { .. })));
        drop(held);
        FileLock::try_exclusive(&path).expect("free once dropped");
    }
}
