/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The security monitor's records: credential changes, process injection, namespace changes,
 * mounts (mount(2) and the new mount API) and module loads, told apart by hdr.kind. The syscall
 * is in `syscall`.
 */
#ifndef __TAPIO_SECURITY_H__
#define __TAPIO_SECURITY_H__

#include "common.h"

#define SECURITY_SOURCE_LEN 128
#define SECURITY_TARGET_LEN 256
#define SECURITY_FSTYPE_LEN 32

enum security_kind {
	SECURITY_CRED_CHANGE = 1,
	SECURITY_PTRACE = 2,
	SECURITY_VM_WRITEV = 3,
	SECURITY_SETNS = 4,
	SECURITY_UNSHARE = 5,
	SECURITY_MOUNT = 6,
	SECURITY_MODULE_LOAD = 7,
	SECURITY_CAPABILITY = 8, /* arg0: capability, arg1: cap_capable opts, ret: its verdict */
	SECURITY_DETACHED_MOUNT = 9, /* fsmount, open_tree(OPEN_TREE_CLONE): a mount not (yet) in the tree */
};

/* The syscall behind a record, in security_event.syscall; mirrored in loader/crates/decode/src/events/security.rs. */
enum security_syscall {
	SECURITY_SYS_SETUID = 1,
	SECURITY_SYS_SETGID = 2,
	SECURITY_SYS_SETREUID = 3,
	SECURITY_SYS_SETREGID = 4,
	SECURITY_SYS_SETRESUID = 5,
	SECURITY_SYS_SETRESGID = 6,
	SECURITY_SYS_CAPSET = 7,
	SECURITY_SYS_PTRACE = 8,
	SECURITY_SYS_PROCESS_VM_WRITEV = 9,
	SECURITY_SYS_SETNS = 10,
	SECURITY_SYS_UNSHARE = 11,
	SECURITY_SYS_MOUNT = 12,
	SECURITY_SYS_INIT_MODULE = 13,
	SECURITY_SYS_FINIT_MODULE = 14,
	SECURITY_SYS_FSOPEN = 15,         /* never sent: names its file's entry in security_mount_fds */
	SECURITY_SYS_FSMOUNT = 16,
	SECURITY_SYS_OPEN_TREE = 17,
	SECURITY_SYS_MOVE_MOUNT = 18,
	SECURITY_SYS_OPEN_TREE_ATTR = 19,
	SECURITY_SYS_FSCONFIG = 20,       /* never sent: parked from its entry to its exit */
};

/* Flags in security_event.flags. */
#define SECURITY_F_IN_CONTAINER 0x1    /* caller outside the initial mount or pid namespace */
#define SECURITY_F_MNT_NS_UNKNOWN 0x2  /* the loader gave no initial mount namespace */
#define SECURITY_F_CAPS_V1 0x4         /* capset with the 32-bit (version 1) ABI */
#define SECURITY_F_CAPS_UNREAD 0x8     /* capset data could not be read from user memory */
#define SECURITY_F_SOURCE_TRUNCATED 0x10
#define SECURITY_F_TARGET_TRUNCATED 0x20
#define SECURITY_F_FSTYPE_TRUNCATED 0x40
#define SECURITY_F_RESULT_UNKNOWN 0x80 /* capability via kprobe: the verdict is not seen */
#define SECURITY_F_USER_NS 0x100       /* capability checked against a non-initial user namespace */
#define SECURITY_F_OPTS_UNKNOWN 0x200  /* capability via its tracepoint: cap_capable opts not seen */

/* "No change" as setre*id/setres*id take it: (uid_t)-1. */
#define SECURITY_ID_UNCHANGED 0xffffffffu

/*
 * One record for every kind; fields a kind does not use are zero. Ids are the kernel's (initial
 * user namespace) view, read from current->cred at the syscall's entry.
 */
struct security_event {
	struct tapio_header hdr;
	__u32 syscall;       /* enum security_syscall */
	__u32 flags;         /* SECURITY_F_* */
	__s64 ret;           /* the syscall's return value (0 or -errno), read at its exit */
	__u32 old_uid;       /* cred: real, effective, saved */
	__u32 old_euid;
	__u32 old_suid;
	__u32 old_gid;
	__u32 old_egid;
	__u32 old_sgid;
	__u32 new_id[3];     /* requested (real, effective, saved) uid or gid; see the syscall */
	__u32 target_pid;    /* ptrace, process_vm_writev, capset header pid */
	__u64 old_cap_effective;
	__u64 old_cap_permitted;
	__u64 new_cap_effective;
	__u64 new_cap_permitted;
	__u64 new_cap_inheritable;
	__u64 arg0;          /* ptrace request, setns nstype, unshare/mount flags, module len or fd */
	__u64 arg1;          /* ptrace addr, setns fd, finit_module flags */
	__u32 mnt_ns;        /* caller's mount namespace inode number */
	__u32 pid_ns_level;  /* caller's pid namespace depth, 0 in the initial one */
};
_Static_assert(sizeof(struct security_event) == 168, "security_event layout");

/*
 * A mount sends this, which starts with a security_event: SECURITY_MOUNT (mount, move_mount) and
 * SECURITY_DETACHED_MOUNT (fsmount, open_tree with OPEN_TREE_CLONE).
 *
 * New mount API (5.2+): fsopen(fstype) gives an fs context fd, fsconfig(fd, "source", ...) names
 * the source, fsmount(fd) makes a detached mount and gives its fd; open_tree(dfd, path,
 * OPEN_TREE_CLONE) makes a detached copy of a tree (a bind mount); move_mount(from_dfd, from_path,
 * to_dfd, to_path) puts one into the tree. The probe remembers what each such fd was made from
 * (security_mount_fds), so move_mount's record carries the source and fstype of the mount it
 * attaches, and `origin` names the syscall that made it.
 */
struct security_mount_event {
	struct security_event base;
	char source[SECURITY_SOURCE_LEN];  /* mount: source; fsmount: fsconfig's "source"; open_tree: its path */
	char target[SECURITY_TARGET_LEN];  /* mount: target; move_mount: to_path (relative to to_dfd) */
	char fstype[SECURITY_FSTYPE_LEN];  /* mount: fstype; fsmount and move_mount: fsopen's fs name */
	__s32 from_dfd;  /* move_mount: from_dfd; open_tree: dfd; fsmount: the fs context fd */
	__s32 to_dfd;    /* move_mount: to_dfd (AT_FDCWD is -100) */
	__u32 origin;    /* move_mount: the syscall that made the mount at from_dfd (enum security_syscall);
			  * fsmount: SECURITY_SYS_FSOPEN; 0 if the monitor did not see it made */
	__u32 _pad0;
};
_Static_assert(sizeof(struct security_mount_event) ==
		       168 + SECURITY_SOURCE_LEN + SECURITY_TARGET_LEN + SECURITY_FSTYPE_LEN + 16,
	       "security_mount_event layout");

/*
 * What a new-mount-API fd was made from, keyed by its struct file: a private map of the probe, not
 * an event. Keyed by the file, not the fd number, so a dup()ed fd or one passed to another
 * process (runtimes make mounts in one process and attach them in another) is still known, and
 * a reused fd number is not taken for the mount it used to hold. `inode` is the file's, checked
 * too: a freed file's address taken by another file matches only with the same inode.
 */
struct security_mount_fd {
	__u64 inode;
	__u32 syscall;  /* SECURITY_SYS_FSOPEN, _FSMOUNT, _OPEN_TREE, _OPEN_TREE_ATTR */
	__u32 flags;    /* SECURITY_F_SOURCE_TRUNCATED, SECURITY_F_FSTYPE_TRUNCATED */
	char source[SECURITY_SOURCE_LEN];
	char fstype[SECURITY_FSTYPE_LEN];
};
_Static_assert(sizeof(struct security_mount_fd) == 16 + SECURITY_SOURCE_LEN + SECURITY_FSTYPE_LEN,
	       "security_mount_fd layout");

/* The security_config array's one slot, filled by the loader after load. */
struct security_config {
	__u32 init_mnt_ns; /* inode of the initial mount namespace, 0 if unknown */
	__u32 _pad0;
};
_Static_assert(sizeof(struct security_config) == 8, "security_config layout");

#endif /* __TAPIO_SECURITY_H__ */
