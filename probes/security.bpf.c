// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * security: credential changes, process injection (ptrace, process_vm_writev), namespace
 * changes (setns, unshare), mounts (mount(2) and the new mount API) and module loads, each flagged
 * when the caller is inside a container.
 *
 * Why syscall tracepoints: they need neither kprobes nor fentry, and the arguments a caller
 * passed are what an alert wants (the uid it asked for, the pid it pokes). Each syscall's entry
 * records the caller's old credentials and namespaces and the arguments in a per-thread pending
 * slot; its exit adds the return value and sends the record, so a refused setuid() is told apart
 * from one that worked. Capability checks are at the end of this file.
 *
 * The new mount API (fsopen, fsconfig, fsmount, open_tree, move_mount: 5.2+) is watched the same
 * way, through a few more syscall tracepoints. They add no node tax of their own: the slow entry
 * path is taken by every syscall once any syscalls tracepoint is attached, which this monitor
 * does already, and past it the kernel tests a per-syscall bit (perf_syscall_enter/exit in
 * kernel/trace/trace_syscalls.c) before it runs a program, so no other syscall runs these. No
 * subsystem tracepoint fires for a mount, and the LSM hooks (sb_mount, move_mount) need BPF
 * trampolines.
 *
 * "In a container" means: the caller's mount namespace is not the initial one, or its pid
 * namespace is not the initial one (level > 0). Either alone misses cases: a container sharing
 * the host pid namespace has its own mount namespace, and `unshare --mount` is the first step of
 * most escapes and sandboxes. The initial mount namespace has no fixed inode number before 6.18,
 * so the loader writes it into `security_config` (a map: 4.19 has no global data); left at 0,
 * only the pid namespace test applies and SECURITY_F_MNT_NS_UNKNOWN says so.
 *
 * No loops, no global data.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "security.h"
#include "transport.bpf.h"
#include "filter.bpf.h"

/* ptrace requests worth a record (include/uapi/linux/ptrace.h): attach and write. */
#define SEC_PTRACE_POKETEXT 4
#define SEC_PTRACE_POKEDATA 5
#define SEC_PTRACE_POKEUSER 6
#define SEC_PTRACE_ATTACH 16
#define SEC_PTRACE_SEIZE 0x4206

/* The CLONE_NEW* bits (include/uapi/linux/sched.h): unshare() without one changes no namespace. */
#define SEC_CLONE_NEW_ANY                                                                           \
	(0x00000080 /* TIME */ | 0x00020000 /* NS */ | 0x02000000 /* CGROUP */ |                    \
	 0x04000000 /* UTS */ | 0x08000000 /* IPC */ | 0x10000000 /* USER */ |                      \
	 0x20000000 /* PID */ | 0x40000000 /* NET */)

/* include/uapi/linux/mount.h: open_tree() makes a detached copy only with OPEN_TREE_CLONE. */
#define SEC_OPEN_TREE_CLONE 1
#define SEC_FSCONFIG_SET_STRING 1
/* fsconfig's key "source" with its NUL, as the little-endian word bpf_probe_read_user_str fills. */
#define SEC_KEY_SOURCE 0x00656372756f73ULL

/* capset()'s ABI versions (include/uapi/linux/capability.h): version 1 carries one data slot. */
#define SEC_CAP_VERSION_1 0x19980330

/* User-space ABI of capset(), read with bpf_probe_read_user: fixed by the syscall, not CO-RE. */
struct sec_user_cap_header {
	__u32 version;
	__s32 pid;
};

struct sec_user_cap_data {
	__u32 effective;
	__u32 permitted;
	__u32 inheritable;
};

/* The initial mount namespace, written by the loader after load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct security_config);
} security_config SEC(".maps");

/*
 * A parked record and what its exit still has to read: the user pointers of strings the entry
 * could not read. At a syscall's entry a string's page may not be mapped yet (a literal in a
 * forked child's rodata is mapped only once touched), and a tracepoint program cannot fault it
 * in; by the exit the kernel has read it, so the exit reads it again. Not sent: the record is `e`.
 */
struct security_pending {
	struct security_mount_event e;
	__u64 user_str[3]; /* source, target, fstype: the pointer to read again at the exit, or 0 */
};

#define SEC_STR_SOURCE 0
#define SEC_STR_TARGET 1
#define SEC_STR_FSTYPE 2

/* The record is built off the 512-byte stack, in a per-CPU slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct security_pending);
} security_scratch SEC(".maps");

/*
 * Entry to exit, keyed by pid_tgid. LRU, so a thread killed between the two (or an entry seen
 * before its exit program was attached) cannot fill the map; few threads are ever inside these
 * syscalls at once.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct security_pending);
} security_pending SEC(".maps");

/*
 * New-mount-API files (fsopen's fs contexts, fsmount's and open_tree's detached mounts) by their
 * struct file: what each was made from, so fsmount and move_mount can say what they mount. LRU: a
 * closed file's entry is left to be evicted. Only these few syscalls write it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct security_mount_fd);
} security_mount_fds SEC(".maps");

/*
 * Fills a record's common part: header, old credentials, namespaces. `e` is either the per-CPU
 * slot (syscall entries: the mount record does not fit the stack) or the caller's stack.
 */
static __always_inline void security_fill(struct security_event *e, __u8 kind, __u32 syscall)
{
	struct task_struct___security *task = (void *)bpf_get_current_task();
	struct security_config *cfg;
	const struct cred *cred;
	struct nsproxy *nsproxy;
	struct pid *pid;
	__u32 zero = 0, init_mnt_ns;

	__builtin_memset(e, 0, sizeof(*e));
	tapio_fill_header(&e->hdr, TAPIO_MONITOR_SECURITY, kind);
	e->syscall = syscall;
	e->new_id[0] = SECURITY_ID_UNCHANGED;
	e->new_id[1] = SECURITY_ID_UNCHANGED;
	e->new_id[2] = SECURITY_ID_UNCHANGED;

	/* The subjective credentials: what the kernel checks this syscall against. */
	cred = BPF_CORE_READ(task, cred);
	if (cred) {
		e->old_uid = BPF_CORE_READ(cred, uid.val);
		e->old_euid = BPF_CORE_READ(cred, euid.val);
		e->old_suid = BPF_CORE_READ(cred, suid.val);
		e->old_gid = BPF_CORE_READ(cred, gid.val);
		e->old_egid = BPF_CORE_READ(cred, egid.val);
		e->old_sgid = BPF_CORE_READ(cred, sgid.val);
		bpf_core_read(&e->old_cap_effective, sizeof(__u64), &cred->cap_effective);
		bpf_core_read(&e->old_cap_permitted, sizeof(__u64), &cred->cap_permitted);
	}

	/* nsproxy is NULL once an exiting task has dropped its namespaces. */
	nsproxy = BPF_CORE_READ(task, nsproxy);
	if (nsproxy)
		e->mnt_ns = BPF_CORE_READ(nsproxy, mnt_ns, ns.inum);
	pid = BPF_CORE_READ(task, thread_pid);
	if (pid)
		e->pid_ns_level = BPF_CORE_READ(pid, level);

	cfg = bpf_map_lookup_elem(&security_config, &zero);
	init_mnt_ns = cfg ? cfg->init_mnt_ns : 0;
	if (!init_mnt_ns)
		e->flags |= SECURITY_F_MNT_NS_UNKNOWN;
	if (e->pid_ns_level > 0 || (init_mnt_ns && e->mnt_ns && e->mnt_ns != init_mnt_ns))
		e->flags |= SECURITY_F_IN_CONTAINER;
}

/*
 * Starts a syscall's record in the per-CPU slot (a struct security_pending, whose first member it
 * is); NULL to skip. Safe only where the program cannot be preempted between here and
 * security_park(): the classic syscall tracepoints run their BPF programs with preemption off
 * (perf_syscall_enter takes preempt_notrace, also since syscall tracepoints became faultable in
 * 6.13).
 */
static __always_inline struct security_mount_event *security_begin(__u8 kind, __u32 syscall)
{
	struct security_mount_event *e;
	__u32 zero = 0;

	e = bpf_map_lookup_elem(&security_scratch, &zero);
	if (!e)
		return NULL;
	security_fill(&e->base, kind, syscall);
	/* The slot is reused: the mount fields a syscall does not set must not carry the last one's. */
	e->from_dfd = 0;
	e->to_dfd = 0;
	e->origin = 0;
	e->_pad0 = 0;
	((struct security_pending *)e)->user_str[SEC_STR_SOURCE] = 0;
	((struct security_pending *)e)->user_str[SEC_STR_TARGET] = 0;
	((struct security_pending *)e)->user_str[SEC_STR_FSTYPE] = 0;
	return e;
}

/* Parks the record until the syscall's exit. */
static __always_inline void security_park(struct security_mount_event *e)
{
	__u64 id = bpf_get_current_pid_tgid();

	bpf_map_update_elem(&security_pending, &id, e, BPF_ANY);
}

/*
 * Reads a user string of a mount record at the entry; one that cannot be read yet is left empty
 * and read again at the exit (struct security_pending). A NULL pointer (mount(2)'s source of a
 * bind) reads as an empty string and is not read again. Returns the length read, or < 0.
 */
#define SEC_READ_STR(e, field, idx, ptr, truncated)                                                 \
	({                                                                                          \
		long __n = bpf_probe_read_user_str((e)->field, sizeof((e)->field), (ptr));          \
		if (__n < 0)                                                                        \
			((struct security_pending *)(e))->user_str[idx] = (__u64)(ptr);             \
		else if (__n == sizeof((e)->field))                                                 \
			(e)->base.flags |= (truncated);                                             \
		__n;                                                                                \
	})

/* At the exit: reads again the strings the entry could not (see struct security_pending). */
static __always_inline void security_reread(struct security_pending *p)
{
	struct security_mount_event *e = &p->e;
	void *src = (void *)p->user_str[SEC_STR_SOURCE], *target = (void *)p->user_str[SEC_STR_TARGET];
	void *fstype = (void *)p->user_str[SEC_STR_FSTYPE];

	if (src && bpf_probe_read_user_str(e->source, sizeof(e->source), src) == sizeof(e->source))
		e->base.flags |= SECURITY_F_SOURCE_TRUNCATED;
	if (target && bpf_probe_read_user_str(e->target, sizeof(e->target), target) == sizeof(e->target))
		e->base.flags |= SECURITY_F_TARGET_TRUNCATED;
	if (fstype && bpf_probe_read_user_str(e->fstype, sizeof(e->fstype), fstype) == sizeof(e->fstype))
		e->base.flags |= SECURITY_F_FSTYPE_TRUNCATED;
}

/* Adds the return value to the parked record of `syscall` and sends it. */
static __always_inline int security_finish(struct syscall_trace_exit *ctx, __u32 syscall)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct security_mount_event *e;

	e = bpf_map_lookup_elem(&security_pending, &id);
	if (!e)
		return 0;
	/* A record of another syscall was parked before its exit program was attached: stale. */
	if (e->base.syscall == syscall) {
		e->base.ret = ctx->ret;
		if (e->base.hdr.kind == SECURITY_MOUNT) {
			security_reread((struct security_pending *)e);
			tapio_emit(ctx, e, sizeof(*e));
		} else
			tapio_emit(ctx, &e->base, sizeof(e->base));
	}
	bpf_map_delete_elem(&security_pending, &id);
	return 0;
}

/* setuid/setgid take one id; setre*id two, setres*id three; (id_t)-1 leaves one unchanged. */
static __always_inline int security_setid(struct syscall_trace_enter *ctx, __u32 syscall, int n)
{
	/* Context reads first, at constant offsets: the verifier refuses a moved ctx pointer. */
	__u32 a0 = ctx->args[0], a1 = ctx->args[1], a2 = ctx->args[2];
	struct security_mount_event *e = security_begin(SECURITY_CRED_CHANGE, syscall);

	if (!e)
		return 0;
	e->base.new_id[0] = a0;
	if (n > 1)
		e->base.new_id[1] = a1;
	if (n > 2)
		e->base.new_id[2] = a2;
	security_park(e);
	return 0;
}

static __always_inline int security_capset(struct syscall_trace_enter *ctx)
{
	void *headerp = (void *)ctx->args[0], *datap = (void *)ctx->args[1];
	struct security_mount_event *e = security_begin(SECURITY_CRED_CHANGE, SECURITY_SYS_CAPSET);
	struct sec_user_cap_header header = {};
	struct sec_user_cap_data data[2] = {};
	long err;

	if (!e)
		return 0;
	if (bpf_probe_read_user(&header, sizeof(header), headerp) == 0)
		e->base.target_pid = header.pid;
	if (header.version == SEC_CAP_VERSION_1) {
		e->base.flags |= SECURITY_F_CAPS_V1;
		err = bpf_probe_read_user(&data[0], sizeof(data[0]), datap);
	} else {
		err = bpf_probe_read_user(data, sizeof(data), datap);
	}
	if (err) {
		e->base.flags |= SECURITY_F_CAPS_UNREAD;
	} else {
		e->base.new_cap_effective = (__u64)data[1].effective << 32 | data[0].effective;
		e->base.new_cap_permitted = (__u64)data[1].permitted << 32 | data[0].permitted;
		e->base.new_cap_inheritable = (__u64)data[1].inheritable << 32 | data[0].inheritable;
	}
	security_park(e);
	return 0;
}

static __always_inline int security_ptrace(struct syscall_trace_enter *ctx)
{
	__u64 request = ctx->args[0], target = ctx->args[1], addr = ctx->args[2];
	struct security_mount_event *e;

	if (request != SEC_PTRACE_ATTACH && request != SEC_PTRACE_SEIZE && request != SEC_PTRACE_POKETEXT &&
	    request != SEC_PTRACE_POKEDATA && request != SEC_PTRACE_POKEUSER)
		return 0;
	e = security_begin(SECURITY_PTRACE, SECURITY_SYS_PTRACE);
	if (!e)
		return 0;
	e->base.arg0 = request;
	e->base.target_pid = (__u32)target;
	e->base.arg1 = addr;
	security_park(e);
	return 0;
}

static __always_inline int security_vm_writev(struct syscall_trace_enter *ctx)
{
	__u64 target = ctx->args[0], liovcnt = ctx->args[2], riovcnt = ctx->args[4];
	struct security_mount_event *e = security_begin(SECURITY_VM_WRITEV, SECURITY_SYS_PROCESS_VM_WRITEV);

	if (!e)
		return 0;
	e->base.target_pid = (__u32)target;
	e->base.arg0 = liovcnt;
	e->base.arg1 = riovcnt;
	security_park(e);
	return 0;
}

static __always_inline int security_setns(struct syscall_trace_enter *ctx)
{
	__u64 fd = ctx->args[0], nstype = ctx->args[1];
	struct security_mount_event *e = security_begin(SECURITY_SETNS, SECURITY_SYS_SETNS);

	if (!e)
		return 0;
	e->base.arg0 = nstype; /* 0 or CLONE_NEW* */
	e->base.arg1 = fd;
	security_park(e);
	return 0;
}

static __always_inline int security_unshare(struct syscall_trace_enter *ctx)
{
	__u64 flags = ctx->args[0];
	struct security_mount_event *e;

	if (!(flags & SEC_CLONE_NEW_ANY))
		return 0;
	e = security_begin(SECURITY_UNSHARE, SECURITY_SYS_UNSHARE);
	if (!e)
		return 0;
	e->base.arg0 = flags;
	security_park(e);
	return 0;
}

static __always_inline int security_mount(struct syscall_trace_enter *ctx)
{
	void *source = (void *)ctx->args[0], *target = (void *)ctx->args[1], *fstype = (void *)ctx->args[2];
	__u64 flags = ctx->args[3];
	struct security_mount_event *e = security_begin(SECURITY_MOUNT, SECURITY_SYS_MOUNT);

	if (!e)
		return 0;
	/* A bind or remount has no source or type: a NULL pointer reads as an empty string. */
	if (source)
		SEC_READ_STR(e, source, SEC_STR_SOURCE, source, SECURITY_F_SOURCE_TRUNCATED);
	else
		e->source[0] = 0;
	SEC_READ_STR(e, target, SEC_STR_TARGET, target, SECURITY_F_TARGET_TRUNCATED);
	if (fstype)
		SEC_READ_STR(e, fstype, SEC_STR_FSTYPE, fstype, SECURITY_F_FSTYPE_TRUNCATED);
	else
		e->fstype[0] = 0;
	e->base.arg0 = flags; /* MS_* */
	security_park(e);
	return 0;
}

/* The struct file behind `fd` of the current task, NULL if none; fd is checked against max_fds. */
static __always_inline struct file *security_fd_file(__s32 fd)
{
	struct task_struct___security *task = (void *)bpf_get_current_task();
	struct files_struct *files;
	struct fdtable *fdt;
	struct file **fds, *file = NULL;

	if (fd < 0)
		return NULL;
	files = BPF_CORE_READ(task, files);
	if (!files)
		return NULL;
	fdt = BPF_CORE_READ(files, fdt);
	if (!fdt || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (!fds || bpf_core_read(&file, sizeof(file), &fds[fd]))
		return NULL;
	return file;
}

/* The entry of the file behind `fd`, if that file is one this probe saw made. */
static __always_inline struct security_mount_fd *security_mount_fd_find(__s32 fd)
{
	struct file *file = security_fd_file(fd);
	struct security_mount_fd *m;
	__u64 key = (__u64)file;

	if (!file)
		return NULL;
	m = bpf_map_lookup_elem(&security_mount_fds, &key);
	if (!m || m->inode != (__u64)BPF_CORE_READ(file, f_inode))
		return NULL;
	return m;
}

/* Remembers what the fd a syscall returned was made from: the parked record's source and fstype. */
static __always_inline void security_mount_fd_remember(struct security_mount_event *e, __s32 fd)
{
	struct file *file = security_fd_file(fd);
	struct security_mount_fd m = {};
	__u64 key = (__u64)file;

	if (!file)
		return;
	m.inode = (__u64)BPF_CORE_READ(file, f_inode);
	m.syscall = e->base.syscall;
	m.flags = e->base.flags & (SECURITY_F_SOURCE_TRUNCATED | SECURITY_F_FSTYPE_TRUNCATED);
	__builtin_memcpy(m.source, e->source, sizeof(m.source));
	__builtin_memcpy(m.fstype, e->fstype, sizeof(m.fstype));
	bpf_map_update_elem(&security_mount_fds, &key, &m, BPF_ANY);
}

/* Copies a remembered fd's source and fstype into a record. */
static __always_inline void security_mount_fd_copy(struct security_mount_event *e, struct security_mount_fd *m)
{
	__builtin_memcpy(e->source, m->source, sizeof(e->source));
	__builtin_memcpy(e->fstype, m->fstype, sizeof(e->fstype));
	e->base.flags |= m->flags;
}

/* fsopen(fs_name, flags): no record of its own; its exit remembers the fs context's fstype. */
static __always_inline int security_fsopen(struct syscall_trace_enter *ctx)
{
	void *fs_name = (void *)ctx->args[0];
	struct security_mount_event *e = security_begin(SECURITY_MOUNT, SECURITY_SYS_FSOPEN);

	if (!e)
		return 0;
	e->source[0] = 0;
	SEC_READ_STR(e, fstype, SEC_STR_FSTYPE, fs_name, SECURITY_F_FSTYPE_TRUNCATED);
	security_park(e);
	return 0;
}

/*
 * fsconfig(fd, FSCONFIG_SET_STRING, key, value, 0) on a context fsopen made: parks the key and
 * value, read at the exit once the kernel has read them; a "source" the kernel took becomes the
 * context's. Every other command, and every other fd, returns at once.
 */
static __always_inline int security_fsconfig(struct syscall_trace_enter *ctx)
{
	__s32 fd = ctx->args[0];
	__u32 cmd = ctx->args[1];
	__u64 key = ctx->args[2], value = ctx->args[3];
	struct security_mount_fd *m;
	struct security_mount_event *e;

	if (cmd != SEC_FSCONFIG_SET_STRING)
		return 0;
	m = security_mount_fd_find(fd);
	if (!m || m->syscall != SECURITY_SYS_FSOPEN)
		return 0;
	e = security_begin(SECURITY_MOUNT, SECURITY_SYS_FSCONFIG);
	if (!e)
		return 0;
	e->from_dfd = fd;
	((struct security_pending *)e)->user_str[SEC_STR_SOURCE] = value;
	((struct security_pending *)e)->user_str[SEC_STR_TARGET] = key;
	security_park(e);
	return 0;
}

/* fsconfig's exit: a "source" it set is the context's source. Sends nothing. */
static __always_inline int security_fsconfig_exit(struct syscall_trace_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid(), name = 0;
	struct security_pending *p = bpf_map_lookup_elem(&security_pending, &id);
	struct security_mount_fd *m;

	if (!p)
		return 0;
	if (p->e.base.syscall != SECURITY_SYS_FSCONFIG || ctx->ret != 0)
		goto out;
	if (bpf_probe_read_user_str(&name, sizeof(name), (void *)p->user_str[SEC_STR_TARGET]) != 7 ||
	    name != SEC_KEY_SOURCE)
		goto out;
	m = security_mount_fd_find(p->e.from_dfd);
	if (!m || m->syscall != SECURITY_SYS_FSOPEN)
		goto out;
	if (bpf_probe_read_user_str(m->source, sizeof(m->source), (void *)p->user_str[SEC_STR_SOURCE]) ==
	    sizeof(m->source))
		m->flags |= SECURITY_F_SOURCE_TRUNCATED;
	else
		m->flags &= ~SECURITY_F_SOURCE_TRUNCATED;
out:
	bpf_map_delete_elem(&security_pending, &id);
	return 0;
}

/* fsmount(fs_fd, flags, attr_flags): a detached mount of the context's filesystem. */
static __always_inline int security_fsmount(struct syscall_trace_enter *ctx)
{
	__s32 fs_fd = ctx->args[0];
	__u64 flags = ctx->args[1], attr_flags = ctx->args[2];
	struct security_mount_event *e = security_begin(SECURITY_DETACHED_MOUNT, SECURITY_SYS_FSMOUNT);
	struct security_mount_fd *m;

	if (!e)
		return 0;
	e->source[0] = 0;
	e->target[0] = 0;
	e->fstype[0] = 0;
	m = security_mount_fd_find(fs_fd);
	if (m && m->syscall == SECURITY_SYS_FSOPEN) {
		security_mount_fd_copy(e, m);
		e->origin = SECURITY_SYS_FSOPEN;
	}
	e->from_dfd = fs_fd;
	e->base.arg0 = flags;      /* FSMOUNT_* */
	e->base.arg1 = attr_flags; /* MOUNT_ATTR_* */
	security_park(e);
	return 0;
}

/*
 * open_tree(dfd, path, flags) and open_tree_attr(dfd, path, flags, attr, size): with
 * OPEN_TREE_CLONE a detached copy of the tree at path (a bind mount, recursive with AT_RECURSIVE);
 * without, an fd to a mount that already exists, which mounts nothing and is not reported.
 */
static __always_inline int security_open_tree(struct syscall_trace_enter *ctx, __u32 syscall)
{
	__s32 dfd = ctx->args[0];
	void *path = (void *)ctx->args[1];
	__u64 flags = ctx->args[2];
	struct security_mount_event *e;

	if (!(flags & SEC_OPEN_TREE_CLONE))
		return 0;
	e = security_begin(SECURITY_DETACHED_MOUNT, syscall);
	if (!e)
		return 0;
	e->target[0] = 0;
	e->fstype[0] = 0;
	SEC_READ_STR(e, source, SEC_STR_SOURCE, path, SECURITY_F_SOURCE_TRUNCATED);
	e->from_dfd = dfd;
	e->base.arg0 = flags; /* OPEN_TREE_*, AT_* */
	security_park(e);
	return 0;
}

/*
 * move_mount(from_dfd, from_path, to_dfd, to_path, flags): the mount that lands in the tree. With
 * an empty from_path (MOVE_MOUNT_F_EMPTY_PATH) the mount is from_dfd's: at the exit, an fsmount or
 * open_tree file this probe saw made gives the record its source, fstype and origin. A from_path
 * is the source as given (an existing mount moved).
 */
static __always_inline int security_move_mount(struct syscall_trace_enter *ctx)
{
	__s32 from_dfd = ctx->args[0], to_dfd = ctx->args[2];
	void *from_path = (void *)ctx->args[1], *to_path = (void *)ctx->args[3];
	__u64 flags = ctx->args[4];
	struct security_mount_event *e = security_begin(SECURITY_MOUNT, SECURITY_SYS_MOVE_MOUNT);

	if (!e)
		return 0;
	e->fstype[0] = 0;
	SEC_READ_STR(e, target, SEC_STR_TARGET, to_path, SECURITY_F_TARGET_TRUNCATED);
	SEC_READ_STR(e, source, SEC_STR_SOURCE, from_path, SECURITY_F_SOURCE_TRUNCATED);
	e->from_dfd = from_dfd;
	e->to_dfd = to_dfd;
	e->base.arg0 = flags; /* MOVE_MOUNT_* */
	security_park(e);
	return 0;
}

/*
 * The exit of fsopen, fsmount, open_tree(_attr) and move_mount: reads the strings the entry could
 * not, remembers what a returned fd was made from, and sends the record (fsopen's excepted: a
 * context mounts nothing). A refused call is sent too, with its -errno.
 */
static __always_inline int security_finish_mount(struct syscall_trace_exit *ctx, __u32 syscall)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct security_pending *p = bpf_map_lookup_elem(&security_pending, &id);
	struct security_mount_event *e;
	struct security_mount_fd *m;

	if (!p)
		return 0;
	e = &p->e;
	if (e->base.syscall != syscall)
		goto out;
	e->base.ret = ctx->ret;
	security_reread(p);
	if (syscall == SECURITY_SYS_MOVE_MOUNT) {
		if (e->source[0] == 0) {
			m = security_mount_fd_find(e->from_dfd);
			if (m && m->syscall != SECURITY_SYS_FSOPEN) {
				security_mount_fd_copy(e, m);
				e->origin = m->syscall;
			}
		}
	} else if (ctx->ret >= 0) {
		security_mount_fd_remember(e, (__s32)ctx->ret);
	}
	if (syscall != SECURITY_SYS_FSOPEN)
		tapio_emit(ctx, e, sizeof(*e));
out:
	bpf_map_delete_elem(&security_pending, &id);
	return 0;
}

static __always_inline int security_module(struct syscall_trace_enter *ctx, __u32 syscall)
{
	__u64 a0 = ctx->args[0], a1 = ctx->args[1], a2 = ctx->args[2];
	struct security_mount_event *e = security_begin(SECURITY_MODULE_LOAD, syscall);

	if (!e)
		return 0;
	if (syscall == SECURITY_SYS_INIT_MODULE) {
		e->base.arg0 = a1; /* image length */
	} else {
		e->base.arg0 = a0; /* fd */
		e->base.arg1 = a2; /* MODULE_INIT_* flags */
	}
	security_park(e);
	return 0;
}

/* One entry and one exit program per syscall; each delegates. */
#define SECURITY_ENTER(name, call)                                                                  \
	SEC("tracepoint/syscalls/sys_enter_" #name)                                                 \
	int sec_enter_##name(struct syscall_trace_enter *ctx) { return tapio_filtered() ? 0 : call; }
#define SECURITY_EXIT(name, syscall)                                                                \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                                  \
	int sec_exit_##name(struct syscall_trace_exit *ctx) { return security_finish(ctx, syscall); }

SECURITY_ENTER(setuid, security_setid(ctx, SECURITY_SYS_SETUID, 1))
SECURITY_ENTER(setgid, security_setid(ctx, SECURITY_SYS_SETGID, 1))
SECURITY_ENTER(setreuid, security_setid(ctx, SECURITY_SYS_SETREUID, 2))
SECURITY_ENTER(setregid, security_setid(ctx, SECURITY_SYS_SETREGID, 2))
SECURITY_ENTER(setresuid, security_setid(ctx, SECURITY_SYS_SETRESUID, 3))
SECURITY_ENTER(setresgid, security_setid(ctx, SECURITY_SYS_SETRESGID, 3))
SECURITY_ENTER(capset, security_capset(ctx))
SECURITY_ENTER(ptrace, security_ptrace(ctx))
SECURITY_ENTER(process_vm_writev, security_vm_writev(ctx))
SECURITY_ENTER(setns, security_setns(ctx))
SECURITY_ENTER(unshare, security_unshare(ctx))
SECURITY_ENTER(mount, security_mount(ctx))
SECURITY_ENTER(init_module, security_module(ctx, SECURITY_SYS_INIT_MODULE))
SECURITY_ENTER(finit_module, security_module(ctx, SECURITY_SYS_FINIT_MODULE))
SECURITY_ENTER(fsopen, security_fsopen(ctx))
SECURITY_ENTER(fsconfig, security_fsconfig(ctx))
SECURITY_ENTER(fsmount, security_fsmount(ctx))
SECURITY_ENTER(open_tree, security_open_tree(ctx, SECURITY_SYS_OPEN_TREE))
SECURITY_ENTER(open_tree_attr, security_open_tree(ctx, SECURITY_SYS_OPEN_TREE_ATTR))
SECURITY_ENTER(move_mount, security_move_mount(ctx))

SECURITY_EXIT(setuid, SECURITY_SYS_SETUID)
SECURITY_EXIT(setgid, SECURITY_SYS_SETGID)
SECURITY_EXIT(setreuid, SECURITY_SYS_SETREUID)
SECURITY_EXIT(setregid, SECURITY_SYS_SETREGID)
SECURITY_EXIT(setresuid, SECURITY_SYS_SETRESUID)
SECURITY_EXIT(setresgid, SECURITY_SYS_SETRESGID)
SECURITY_EXIT(capset, SECURITY_SYS_CAPSET)
SECURITY_EXIT(ptrace, SECURITY_SYS_PTRACE)
SECURITY_EXIT(process_vm_writev, SECURITY_SYS_PROCESS_VM_WRITEV)
SECURITY_EXIT(setns, SECURITY_SYS_SETNS)
SECURITY_EXIT(unshare, SECURITY_SYS_UNSHARE)
SECURITY_EXIT(mount, SECURITY_SYS_MOUNT)
SECURITY_EXIT(init_module, SECURITY_SYS_INIT_MODULE)
SECURITY_EXIT(finit_module, SECURITY_SYS_FINIT_MODULE)

/* The new mount API's exits. */
#define SECURITY_EXIT_MOUNT(name, syscall)                                                          \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                                  \
	int sec_exit_##name(struct syscall_trace_exit *ctx) { return security_finish_mount(ctx, syscall); }

SECURITY_EXIT_MOUNT(fsopen, SECURITY_SYS_FSOPEN)
SECURITY_EXIT_MOUNT(fsmount, SECURITY_SYS_FSMOUNT)
SECURITY_EXIT_MOUNT(open_tree, SECURITY_SYS_OPEN_TREE)
SECURITY_EXIT_MOUNT(open_tree_attr, SECURITY_SYS_OPEN_TREE_ATTR)
SECURITY_EXIT_MOUNT(move_mount, SECURITY_SYS_MOVE_MOUNT)

SEC("tracepoint/syscalls/sys_exit_fsconfig")
int sec_exit_fsconfig(struct syscall_trace_exit *ctx) { return security_fsconfig_exit(ctx); }

/*
 * capability: every capable() check, through the capability:cap_capable tracepoint (6.14+, with
 * the verdict but not cap_capable()'s `opts`), fexit (5.5+, with the verdict and `opts`) or kprobe
 * (arguments only, no verdict); the loader takes the first that attaches (CAPABILITY_GROUP in
 * loader/crates/catalog/src/security.rs). cap_capable() runs constantly, so a (process, capability,
 * verdict) is reported once a second at most: the first sighting is the signal, repeats are noise.
 *
 * The record is built on the stack (168 bytes), not in security_scratch: an fexit program runs
 * with migration disabled but may be preempted (PREEMPT_RCU, PREEMPT_RT), so another task on this
 * CPU could overwrite a shared slot halfway (the race network.bpf.c describes). On the stack, no
 * path of the three depends on how its hook runs.
 */
struct capability_key {
	__u32 tgid;
	__s32 cap;
	__s32 ret;
	__u32 _pad0;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct capability_key);
	__type(value, __u64);
} capability_seen SEC(".maps");

#define CAPABILITY_REPEAT_NS 1000000000ULL

static __always_inline int security_capability(void *ctx, struct user_namespace *targ_ns, int cap,
					       unsigned int opts, int ret, __u32 flags)
{
	struct capability_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .cap = cap, .ret = ret };
	struct security_event e;
	__u64 now, *last;

	if (tapio_filtered())
		return 0;
	now = bpf_ktime_get_ns();
	last = bpf_map_lookup_elem(&capability_seen, &key);
	if (last && now - *last < CAPABILITY_REPEAT_NS)
		return 0;
	bpf_map_update_elem(&capability_seen, &key, &now, BPF_ANY);
	security_fill(&e, SECURITY_CAPABILITY, 0);
	e.arg0 = (__u32)cap;
	e.arg1 = opts;
	e.ret = ret;
	e.flags |= flags;
	if (targ_ns && BPF_CORE_READ(targ_ns, level) > 0)
		e.flags |= SECURITY_F_USER_NS;
	tapio_emit(ctx, &e, sizeof(e));
	return 0;
}

/*
 * TP_PROTO(const struct cred *cred, struct user_namespace *target_ns,
 *          const struct user_namespace *capable_ns, int cap, int ret), traced at the end of
 * cap_capable() with its return value (include/trace/events/capability.h, 6.14+). A raw
 * tracepoint: no perf buffer is filled before the program runs, and it loads on every kernel with
 * raw tracepoints (4.17+); the loader checks the prototype in the kernel's BTF
 * (btf_trace_cap_capable) before it attaches, since raw arguments are positional.
 */
SEC("raw_tracepoint/cap_capable")
int sec_capable_tp(struct bpf_raw_tracepoint_args *ctx)
{
	struct user_namespace *targ_ns = (void *)ctx->args[1];
	int cap = (int)ctx->args[3], ret = (int)ctx->args[4];

	return security_capability(ctx, targ_ns, cap, 0, ret, SECURITY_F_OPTS_UNKNOWN);
}

SEC("fexit/cap_capable")
int BPF_PROG(sec_capable_fexit, const struct cred *cred, struct user_namespace *targ_ns, int cap,
	     unsigned int opts, int ret)
{
	return security_capability(ctx, targ_ns, cap, opts, ret, 0);
}

SEC("kprobe/cap_capable")
int BPF_KPROBE(sec_capable_kprobe, const struct cred *cred, struct user_namespace *targ_ns, int cap,
	       unsigned int opts)
{
	return security_capability(ctx, targ_ns, cap, opts, 0, SECURITY_F_RESULT_UNKNOWN);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
