// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * security: credential changes, process injection (ptrace, process_vm_writev), namespace
 * changes (setns, unshare), mounts and module loads, each flagged when the caller is inside a
 * container.
 *
 * Why syscall tracepoints: they need neither kprobes nor fentry, and the arguments a caller
 * passed are what an alert wants (the uid it asked for, the pid it pokes). Each syscall's entry
 * records the caller's old credentials and namespaces and the arguments in a per-thread pending
 * slot; its exit adds the return value and sends the record, so a refused setuid() is told apart
 * from one that worked. Capability checks are at the end of this file.
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

/* The record is built off the 512-byte stack, in a per-CPU slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct security_mount_event);
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
	__type(value, struct security_mount_event);
} security_pending SEC(".maps");

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
 * Starts a syscall's record in the per-CPU slot; NULL to skip. Safe only where the program cannot
 * be preempted between here and security_park(): the classic syscall tracepoints run their BPF
 * programs with preemption off (perf_syscall_enter takes preempt_notrace, also since syscall
 * tracepoints became faultable in 6.13).
 */
static __always_inline struct security_mount_event *security_begin(__u8 kind, __u32 syscall)
{
	struct security_mount_event *e;
	__u32 zero = 0;

	e = bpf_map_lookup_elem(&security_scratch, &zero);
	if (!e)
		return NULL;
	security_fill(&e->base, kind, syscall);
	return e;
}

/* Parks the record until the syscall's exit. */
static __always_inline void security_park(struct security_mount_event *e)
{
	__u64 id = bpf_get_current_pid_tgid();

	bpf_map_update_elem(&security_pending, &id, e, BPF_ANY);
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
		if (e->base.hdr.kind == SECURITY_MOUNT)
			tapio_emit(ctx, e, sizeof(*e));
		else
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
	long n;

	if (!e)
		return 0;
	/* A bind or remount has no source or type: a NULL pointer reads as an empty string. */
	e->source[0] = 0;
	e->target[0] = 0;
	e->fstype[0] = 0;
	n = bpf_probe_read_user_str(e->source, sizeof(e->source), source);
	if (n == sizeof(e->source))
		e->base.flags |= SECURITY_F_SOURCE_TRUNCATED;
	n = bpf_probe_read_user_str(e->target, sizeof(e->target), target);
	if (n == sizeof(e->target))
		e->base.flags |= SECURITY_F_TARGET_TRUNCATED;
	n = bpf_probe_read_user_str(e->fstype, sizeof(e->fstype), fstype);
	if (n == sizeof(e->fstype))
		e->base.flags |= SECURITY_F_FSTYPE_TRUNCATED;
	e->base.arg0 = flags; /* MS_* */
	security_park(e);
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
	int sec_enter_##name(struct syscall_trace_enter *ctx) { return call; }
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

/*
 * capability: every capable() check, through the capability:cap_capable tracepoint (6.14+, with
 * the verdict but not cap_capable()'s `opts`), fexit (5.5+, with the verdict and `opts`) or kprobe
 * (arguments only, no verdict); the loader takes the first that attaches (CAPABILITY_GROUP in
 * loader/src/monitors/security.rs). cap_capable() runs constantly, so a (process, capability,
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
	__u64 now = bpf_ktime_get_ns(), *last;

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
