//! bpf_links from cgroup programs to a cgroup, made with `BPF_LINK_CREATE` ourselves.
//!
//! Why not aya's `CgroupSkb::attach`: aya 0.13 keeps the link's fd private, so such a link can be
//! neither pinned (`run --pin-path` keeps programs attached across a restart) nor handed over.
//! A link made here is an owned fd: dropping it detaches, pinning it keeps it. Kernels before 5.7
//! have no cgroup bpf_link; there the caller falls back to aya's `BPF_PROG_ATTACH` path, whose
//! attachment cannot be pinned.

use std::{
    ffi::CString,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
};

const BPF_OBJ_PIN: i32 = 6;
const BPF_LINK_CREATE: i32 = 28;

/// `enum bpf_attach_type` values of the cgroup attach points we use (include/uapi/linux/bpf.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CgroupAttach {
    InetIngress = 0,
    InetEgress = 1,
    InetSockCreate = 2,
}

/// The `link_create` member of `union bpf_attr`, padded to the union's size: the kernel checks
/// that every byte past the fields it knows is zero, so no byte may be left uninitialised.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 14],
}

/// The `obj_pin` member of `union bpf_attr`, padded likewise.
#[repr(C)]
struct ObjPinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    _rest: [u64; 14],
}

fn sys_bpf<T>(cmd: i32, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: attr is a valid, fully initialised attribute struct of the size passed.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// One program attached to one cgroup through a bpf_link. Dropping it detaches the program,
/// unless it was pinned.
#[derive(Debug)]
pub struct CgroupLink {
    fd: OwnedFd,
}

impl CgroupLink {
    /// Attaches `prog` to `cgroup` (multi mode: other agents' programs there keep running).
    pub fn attach(prog: BorrowedFd<'_>, cgroup: BorrowedFd<'_>, attach: CgroupAttach) -> std::io::Result<Self> {
        let mut attr = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            target_fd: cgroup.as_raw_fd() as u32,
            attach_type: attach as u32,
            flags: 0,
            _rest: [0; 14],
        };
        let fd = sys_bpf(BPF_LINK_CREATE, &mut attr)?;
        // SAFETY: BPF_LINK_CREATE returned a new fd that nothing else owns.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd as i32) } })
    }

    /// Pins the link at `path` on a bpffs: it then outlives this process.
    pub fn pin(&self, path: &Path) -> std::io::Result<()> {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut attr = ObjPinAttr { pathname: c.as_ptr() as u64, bpf_fd: self.fd.as_raw_fd() as u32, file_flags: 0, _rest: [0; 14] };
        sys_bpf(BPF_OBJ_PIN, &mut attr).map(drop)
    }
}

impl AsFd for CgroupLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attribute structs are exactly as large as `union bpf_attr`'s members we pass, with no
    /// implicit padding (an uninitialised padding byte is an EINVAL before 6.10 or garbage).
    #[test]
    fn attr_structs_have_no_implicit_padding() {
        assert_eq!(std::mem::size_of::<LinkCreateAttr>(), 16 + 14 * 8);
        assert_eq!(std::mem::size_of::<ObjPinAttr>(), 16 + 14 * 8);
    }
}
