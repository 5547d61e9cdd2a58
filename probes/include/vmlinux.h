/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Trimmed CO-RE kernel types for the tapio-probes bundle.
 *
 * Why trimmed and committed: the bundle must build byte-for-byte the same on any machine, so it
 * never reads the build machine's /sys/kernel/btf. Every record below carries
 * preserve_access_index, so each field access becomes a CO-RE relocation that the loader resolves
 * against the running kernel's BTF (or an external BTF file). Only the fields the probes read are
 * declared; their order and sizes here do not matter, their names and kinds do.
 */
#ifndef __TAPIO_VMLINUX_H__
#define __TAPIO_VMLINUX_H__
/* Tells bpf_tracing.h to use the kernel's pt_regs field names (di, si, ...), as ours are. */
#define __VMLINUX_H__

#include <linux/types.h>
#include <linux/bpf.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef int pid_t;
typedef _Bool bool;
enum { false = 0, true = 1 };

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

typedef struct {
	int counter;
} atomic_t;

struct ns_common {
	unsigned int inum;
};

struct pid_namespace {
	struct ns_common ns;
};

struct upid {
	int nr;
	struct pid_namespace *ns;
};

/* Since 4.19 a task's own pid lives in task_struct::thread_pid. */
struct pid {
	unsigned int level;
	struct upid numbers[1];
};

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
};

struct signal_struct {
	atomic_t live;
	int group_exit_code;
	unsigned int flags; /* SIGNAL_GROUP_EXIT 0x4 (include/linux/sched/signal.h, unchanged since 2.6) */
};

struct task_struct {
	pid_t pid;
	pid_t tgid;
	struct task_struct *real_parent;
	struct task_struct *parent;
	struct task_struct *group_leader;
	char comm[16];
	u64 start_time;
	int exit_code;
	struct mm_struct *mm;
	struct pid *thread_pid;
	struct signal_struct *signal;
};

/* Tracepoint contexts, as the kernel's trace_event_raw_<event> types describe them. */
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

/*
 * sched_process_exit with the caller's group_dead (7.x and this host's 6.18; 6.12 and older use
 * trace_event_raw_sched_process_template, without it): for bpf_core_field_exists and the read.
 */
struct trace_event_raw_sched_process_exit {
	struct trace_entry ent;
	char comm[16];
	pid_t pid;
	int prio;
	bool group_dead;
};

struct trace_event_raw_sched_process_exec {
	struct trace_entry ent;
	u32 __data_loc_filename;
	pid_t pid;
	pid_t old_pid;
	char __data[0];
};

/* --- network and kernel monitors: sockets, cgroups, OOM --- */

struct in6_addr {
	union {
		__u8 u6_addr8[16];
	} in6_u;
};

/*
 * The kernel nests these in anonymous unions and structs; CO-RE finds a field by name through
 * anonymous members, so a flat declaration relocates correctly.
 */
struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	unsigned char skc_state; /* volatile unsigned char in the kernel */
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct kernfs_node {
	u64 id; /* u64 since 5.5; a union kernfs_node_id before */
};

struct cgroup {
	struct kernfs_node *kn;
};

struct css_set {
	struct cgroup *dfl_cgrp;
};

/* Since 5.15 a plain pointer to the socket's cgroup v2 (before: a tagged u64 `val`). */
struct sock_cgroup_data {
	struct cgroup *cgroup;
};

/*
 * 4.19-5.14: one word that is either the socket's cgroup v2 pointer or, with bit 0 (is_data) set,
 * net_prio/net_cls data; 5.7-5.14 also flag bit 1 (no_refcnt). A flavour (CO-RE drops the ___
 * suffix) so both layouts can be named in one object.
 */
struct sock_cgroup_data___old {
	u64 val;
};

struct sock___old {
	struct sock_cgroup_data___old sk_cgrp_data;
};

struct sock {
	struct sock_common __sk_common;
	struct sock_cgroup_data sk_cgrp_data;
	u16 sk_protocol; /* a u16 since 5.6, an 8-bit bitfield before: read with BPF_CORE_READ_BITFIELD_PROBED */
};

/*
 * Only for bpf_core_type_exists: since 6.10 inet_csk_accept(sk, arg) takes this instead of
 * (sk, flags, err, kern), which moves its return value in an fexit context.
 */
struct proto_accept_arg {
	int flags;
	int err;
};

/* inet_sport survives tcp_set_state(TCP_CLOSE), which zeroes skc_num when it releases the port. */
struct inet_sock {
	__be16 inet_sport;
};

/* RFC 4898 counters: bytes_received and bytes_acked since 4.1, bytes_sent since 4.19. */
struct tcp_sock {
	u64 bytes_received;
	u64 bytes_acked;
	u64 bytes_sent;
};

/* A second view of task_struct (CO-RE drops the ___ suffix) for fields the process probe lacks. */
struct task_struct___tapio {
	pid_t pid;
	pid_t tgid;
	char comm[16];
	struct css_set *cgroups;
	const struct cred *cred;
};

struct trace_event_raw_inet_sock_set_state {
	struct trace_entry ent;
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 protocol;
};

/* Only for bpf_core_field_exists: `uid` arrived with the task-pointer prototype of mark_victim. */
struct trace_event_raw_mark_victim {
	struct trace_entry ent;
	int pid;
	u32 uid;
};

/* --- dns and network monitors: from a syscall's fd to its socket (sockfd.bpf.h), and the syscall
 * tracepoint contexts --- */

struct inode {
	unsigned short i_mode; /* umode_t */
};

struct file {
	struct inode *f_inode;
	void *private_data; /* a struct socket * when f_inode is a socket inode */
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct socket {
	short type; /* SOCK_STREAM, SOCK_DGRAM, ... */
	struct sock *sk;
};

/* A view of task_struct for sockfd.bpf.h's one extra field (CO-RE drops the ___ suffix). */
struct task_struct___sockfd {
	struct files_struct *files;
};

/* raw_syscalls/sys_enter and sys_exit (and the raw tracepoints of the same names). */
struct trace_event_raw_sys_enter {
	struct trace_entry ent;
	long id;
	unsigned long args[6];
};

struct trace_event_raw_sys_exit {
	struct trace_entry ent;
	long id;
	long ret;
};

/*
 * syscalls/sys_enter_<name> and sys_exit_<name> (kernel/trace/trace.h): an `int nr`, not
 * raw_syscalls' `long id`. The offsets agree only while trace_entry is 8 bytes. PREEMPT_RT
 * kernels that add preempt_lazy_count to trace_entry (Debian's 6.1 rt flavour: 12 bytes) put
 * raw_syscalls' args at 24 but these at 16, so a program relocated against the raw_syscalls
 * type reads the next argument, or past the event's end, which perf_event_set_bpf_prog()
 * refuses at attach with EACCES. args is a flexible array in the kernel; CO-RE accepts any index.
 */
struct syscall_trace_enter {
	struct trace_entry ent;
	int nr;
	unsigned long args[6];
};

struct syscall_trace_exit {
	struct trace_entry ent;
	int nr;
	long ret;
};

/* --- security monitor: credentials and namespaces of the current task --- */

typedef struct {
	__u32 val;
} kuid_t;

typedef struct {
	__u32 val;
} kgid_t;

/* `struct { u64 val; }` since 6.3, `struct { u32 cap[2]; }` before: both 8 bytes, read raw. */
typedef struct {
	u64 val;
} kernel_cap_t;

struct cred {
	kuid_t uid;
	kgid_t gid;
	kuid_t suid;
	kgid_t sgid;
	kuid_t euid;
	kgid_t egid;
	kernel_cap_t cap_permitted;
	kernel_cap_t cap_effective;
};

struct mnt_namespace {
	struct ns_common ns;
};

struct nsproxy {
	struct mnt_namespace *mnt_ns;
};

/* A view of task_struct for the security probe's fields (CO-RE drops the ___ suffix). */
struct task_struct___security {
	const struct cred *cred;
	struct files_struct *files;
	struct nsproxy *nsproxy;
	struct pid *thread_pid;
};

/* capability: the target namespace of a capability check, and kprobe register contexts. */
struct user_namespace {
	int level;
};

/*
 * The register frame a kprobe, kretprobe or raw sys_enter program is given, one per architecture:
 * bpf_tracing.h names registers by the __TARGET_ARCH_* the build passes (loader/crates/bundle/
 * build.rs), and these are the fields it names there.
 */
#if defined(__TARGET_ARCH_x86)
/* arch/x86/include/asm/ptrace.h, kernel names (di, si, ...): see __VMLINUX_H__ above. */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di;
	unsigned long orig_ax, ip, cs, flags, sp, ss;
};
#elif defined(__TARGET_ARCH_arm64)
/*
 * arch/arm64/include/uapi/asm/ptrace.h: bpf_tracing.h casts a kprobe's context to this type and
 * reads regs[0..4] for the arguments and regs[0] for the return value.
 */
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};

/*
 * arch/arm64/include/asm/ptrace.h: user_pt_regs first, then orig_x0, the syscall's first argument
 * as it entered (regs[0] becomes the return value). bpf_tracing.h reads orig_x0 through its own
 * pt_regs___arm64 flavour; it is declared here so the kernel type is complete.
 */
struct pt_regs {
	union {
		struct user_pt_regs user_regs;
		struct {
			__u64 regs[31];
			__u64 sp;
			__u64 pc;
			__u64 pstate;
		};
	};
	__u64 orig_x0;
};
#else
#error "define __TARGET_ARCH_x86 or __TARGET_ARCH_arm64 (loader/crates/bundle/build.rs does)"
#endif

#pragma clang attribute pop

#endif /* __TAPIO_VMLINUX_H__ */
