//! The security monitor's records (probes/include/security.h).

use crate::TapioHeader;

pub const SECURITY_CRED_CHANGE: u8 = 1;
pub const SECURITY_PTRACE: u8 = 2;
pub const SECURITY_VM_WRITEV: u8 = 3;
pub const SECURITY_SETNS: u8 = 4;
pub const SECURITY_UNSHARE: u8 = 5;
pub const SECURITY_MOUNT: u8 = 6;
pub const SECURITY_MODULE_LOAD: u8 = 7;
pub const SECURITY_CAPABILITY: u8 = 8;
/// fsmount, open_tree(OPEN_TREE_CLONE): a mount made but not (yet) attached to the tree.
pub const SECURITY_DETACHED_MOUNT: u8 = 9;

pub const SECURITY_F_IN_CONTAINER: u32 = 0x1;
pub const SECURITY_F_MNT_NS_UNKNOWN: u32 = 0x2;
pub const SECURITY_F_CAPS_V1: u32 = 0x4;
pub const SECURITY_F_CAPS_UNREAD: u32 = 0x8;
pub const SECURITY_F_SOURCE_TRUNCATED: u32 = 0x10;
pub const SECURITY_F_TARGET_TRUNCATED: u32 = 0x20;
pub const SECURITY_F_FSTYPE_TRUNCATED: u32 = 0x40;
pub const SECURITY_F_RESULT_UNKNOWN: u32 = 0x80;
pub const SECURITY_F_USER_NS: u32 = 0x100;
pub const SECURITY_F_OPTS_UNKNOWN: u32 = 0x200;
/// `(uid_t)-1`: the id the caller left unchanged.
pub const SECURITY_ID_UNCHANGED: u32 = u32::MAX;

/// Mirror of `struct security_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SecurityEvent {
    pub hdr: TapioHeader,
    pub syscall: u32,
    pub flags: u32,
    pub ret: i64,
    pub old_uid: u32,
    pub old_euid: u32,
    pub old_suid: u32,
    pub old_gid: u32,
    pub old_egid: u32,
    pub old_sgid: u32,
    pub new_id: [u32; 3],
    pub target_pid: u32,
    pub old_cap_effective: u64,
    pub old_cap_permitted: u64,
    pub new_cap_effective: u64,
    pub new_cap_permitted: u64,
    pub new_cap_inheritable: u64,
    pub arg0: u64,
    pub arg1: u64,
    pub mnt_ns: u32,
    pub pid_ns_level: u32,
}

/// Mirror of `struct security_mount_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SecurityMountEvent {
    pub base: SecurityEvent,
    pub source: [u8; 128],
    pub target: [u8; 256],
    pub fstype: [u8; 32],
    /// move_mount: from_dfd; open_tree: dfd; fsmount: the fs context fd.
    pub from_dfd: i32,
    /// move_mount: to_dfd (`AT_FDCWD` is -100).
    pub to_dfd: i32,
    /// move_mount: the `enum security_syscall` that made the mount at from_dfd, 0 if not seen.
    pub origin: u32,
    pub _pad0: u32,
}
