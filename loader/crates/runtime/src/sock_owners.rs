//! Owners of the sockets that existed before the packet path attached.
//!
//! The packet path (probes/include/skb.bpf.h) learns a socket's owner when the socket is created.
//! A DNS server or resolver that was already running when the monitor started (the usual case for
//! a DaemonSet rolled onto a busy node) created its sockets before that, so their messages would
//! carry no process. This fills the gap once, right after the programs attach: every inet socket
//! in `/proc/<pid>/fd` is duplicated with `pidfd_getfd` (5.6), its cookie read with
//! `getsockopt(SO_COOKIE)` (the same number `bpf_get_socket_cookie` gives), and the process
//! recorded as its owner unless the probe has already recorded one (`BPF_NOEXIST`: a socket
//! created since the attach has its real creator). A process that exits during the scan, or a
//! kernel without pidfd_getfd, only leaves those sockets unattributed; the scan never fails a
//! load.

use std::{
    fs,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::Path,
};

use aya::{
    maps::{HashMap, MapData},
    Ebpf,
};

/// The map of socket owners every packet-path object has (probes/include/skb.bpf.h).
pub const SOCK_OWNERS_MAP: &str = "sock_owners";
/// Its capacity (`TAPIO_SOCK_OWNERS_MAX`): the scan stops there.
const MAX_OWNERS: usize = 16384;
/// `SO_COOKIE` (include/uapi/asm-generic/socket.h; the same on x86_64 and arm64).
const SO_COOKIE: libc::c_int = 57;
/// `BPF_NOEXIST`.
const NOEXIST: u64 = 1;

/// Mirror of `struct tapio_owner` (probes/include/sock.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TapioOwner {
    pub cgroup_id: u64,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub _pad0: u32,
    pub comm: [u8; 16],
}

// SAFETY: plain old data, every bit pattern valid, no padding (40 bytes, asserted in C).
unsafe impl aya::Pod for TapioOwner {}

/// What one scan found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeedStats {
    /// Inet sockets recorded with their owner.
    pub recorded: usize,
    /// Sockets that could not be read (process gone, pidfd_getfd refused).
    pub unreadable: usize,
}

/// A process's identity as the probe would have recorded it.
fn owner_of(pid: u32, cgroup_root: Option<&Path>) -> Option<TapioOwner> {
    let dir = Path::new("/proc").join(pid.to_string());
    let comm = fs::read_to_string(dir.join("comm")).ok()?;
    let uid = fs::read_to_string(dir.join("status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:").and_then(|r| r.split_whitespace().next()).and_then(|u| u.parse().ok()))?;
    // The v2 cgroup id is the inode number of the cgroup's directory in the v2 hierarchy.
    let cgroup_id = cgroup_root
        .and_then(|root| {
            let text = fs::read_to_string(dir.join("cgroup")).ok()?;
            let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
            fs::metadata(root.join(path.trim_start_matches('/'))).ok().map(|m| m.ino())
        })
        .unwrap_or(0);
    let mut o = TapioOwner { cgroup_id, pid, tgid: pid, uid, ..Default::default() };
    let name = comm.trim_end_matches('\n').as_bytes();
    let n = name.len().min(15);
    o.comm[..n].copy_from_slice(&name[..n]);
    Some(o)
}

/// The cookie of an inet socket fd, or None for any other fd.
fn inet_cookie(fd: &OwnedFd) -> Option<u64> {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd, out-pointers to locals of the sizes given.
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN, (&mut domain as *mut libc::c_int).cast(), &mut len) };
    if rc != 0 || (domain != libc::AF_INET && domain != libc::AF_INET6) {
        return None;
    }
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: as above.
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, SO_COOKIE, (&mut cookie as *mut u64).cast(), &mut len) };
    (rc == 0).then_some(cookie)
}

/// Duplicates fd `target` of the process behind `pidfd` into this process.
fn steal(pidfd: &OwnedFd, target: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_getfd with a valid pidfd and flags 0; returns a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
    // SAFETY: a non-negative return is a fresh fd nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Records the owners of every inet socket already open on the node into each object's
/// [`SOCK_OWNERS_MAP`]. Objects without that map are skipped.
pub fn seed(objects: &mut [&mut Ebpf]) -> SeedStats {
    let mut maps: Vec<HashMap<&mut MapData, u64, TapioOwner>> = objects
        .iter_mut()
        .filter_map(|e| e.map_mut(SOCK_OWNERS_MAP))
        .filter_map(|m| HashMap::try_from(m).ok())
        .collect();
    let mut stats = SeedStats::default();
    if maps.is_empty() {
        return stats;
    }
    let cgroup_root = crate::cgroup2::mounted_root().ok().flatten();
    let me = std::process::id();
    let Ok(procs) = fs::read_dir("/proc") else { return stats };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else { continue };
        let sockets: Vec<i32> = fds
            .flatten()
            .filter(|fd| fs::read_link(fd.path()).map(|l| l.to_string_lossy().starts_with("socket:")).unwrap_or(false))
            .filter_map(|fd| fd.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        if sockets.is_empty() {
            continue;
        }
        // SAFETY: pidfd_open(pid, 0) returns a new fd we own, or -1.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if pidfd < 0 {
            stats.unreadable += sockets.len();
            continue;
        }
        // SAFETY: a fresh fd nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        let Some(owner) = owner_of(pid, cgroup_root.as_deref()) else { continue };
        for target in sockets {
            let Some(fd) = steal(&pidfd, target) else {
                stats.unreadable += 1;
                continue;
            };
            let Some(cookie) = inet_cookie(&fd) else { continue };
            for map in &mut maps {
                // EEXIST: the probe saw the socket created; its record is the better one.
                let _ = map.insert(cookie, owner, NOEXIST);
            }
            stats.recorded += 1;
            if stats.recorded >= MAX_OWNERS {
                return stats;
            }
        }
    }
    stats
}
