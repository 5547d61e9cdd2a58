//! Watching the configuration file, so that an edit (or a Kubernetes ConfigMap update) is applied
//! without a signal: in a `FROM scratch` image there is no `kill`, and under `hostPID` PID 1 is
//! the node's init, not the loader.
//!
//! inotify on the file's directory, not on the file: editors replace files by rename, and the
//! kubelet updates a ConfigMap volume by writing a new `..<timestamp>` directory and renaming a
//! `..data_tmp` symlink over `..data` (the file itself is a symlink through `..data`), so the
//! file's own inode never changes. Where the path resolves into another directory, that
//! directory is watched too. Any event there marks the file as possibly changed; after a short
//! quiet period (a ConfigMap swap is several operations) the file is read, and only a content
//! different from the last one applied counts as a change.

use std::{
    ffi::CString,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    time::Duration,
};

/// How long the directory must be quiet after an event before the file is read.
pub const SETTLE: Duration = Duration::from_millis(100);

/// What changes in a watched directory can replace or rewrite the file.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_CLOSE_WRITE
    | libc::IN_MODIFY
    | libc::IN_DELETE
    | libc::IN_ATTRIB
    | libc::IN_DONT_FOLLOW;

/// An inotify instance watching the directories a configuration file lives in.
pub struct ConfigWatch {
    fd: OwnedFd,
    file: PathBuf,
    /// The directory the symlinks resolved into last time, and its watch descriptor.
    resolved: Option<(PathBuf, i32)>,
    /// The content last applied (or read at start).
    last: Option<Vec<u8>>,
}

impl AsRawFd for ConfigWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for ConfigWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn add_watch(fd: &OwnedFd, dir: &Path) -> io::Result<i32> {
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: fd is an inotify instance and c a NUL-terminated path.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), MASK) };
    if wd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(wd)
}

impl ConfigWatch {
    /// Watches `file`'s directory (and the directory it resolves into), remembering its content
    /// now as the one applied.
    pub fn new(file: &Path) -> io::Result<Self> {
        // SAFETY: no pointer arguments.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        add_watch(&fd, &dir)?;
        let mut watch = Self { fd, file: file.to_owned(), resolved: None, last: std::fs::read(file).ok() };
        watch.follow(&dir);
        Ok(watch)
    }

    /// Watches the directory the file resolves into when it is another one (a symlink to
    /// elsewhere), dropping the previous one.
    fn follow(&mut self, dir: &Path) {
        let target = std::fs::canonicalize(&self.file).ok().and_then(|p| p.parent().map(Path::to_owned));
        let canonical_dir = std::fs::canonicalize(dir).ok();
        let wanted = target.filter(|t| Some(t) != canonical_dir.as_ref());
        if self.resolved.as_ref().map(|(d, _)| d) == wanted.as_ref() {
            return;
        }
        if let Some((_, wd)) = self.resolved.take() {
            // SAFETY: removing a watch of our own instance; a stale wd only returns EINVAL.
            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
        }
        if let Some(target) = wanted {
            match add_watch(&self.fd, &target) {
                Ok(wd) => self.resolved = Some((target, wd)),
                Err(e) => tracing::debug!(dir = %target.display(), "config watch: {e}"),
            }
        }
    }

    /// Reads every pending event; true when there was any.
    pub fn drain(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        let mut any = false;
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return any;
            }
            any = true;
        }
    }

    /// Whether the file's content differs from the last applied; the new content becomes the
    /// last. An unreadable file (mid-swap, deleted) is no change: the next event retries.
    pub fn changed(&mut self) -> bool {
        let dir = self.file.parent().map(Path::to_owned).unwrap_or_else(|| PathBuf::from("."));
        self.follow(&dir);
        match std::fs::read(&self.file) {
            Ok(now) if self.last.as_ref() != Some(&now) => {
                self.last = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Records the file's content now as applied (after a SIGHUP reload).
    pub fn applied(&mut self) {
        self.last = std::fs::read(&self.file).ok();
    }
}
