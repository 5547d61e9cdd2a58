// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * kernel: node-level signals per cgroup - TCP socket lifecycle (IPv4 and IPv6) and OOM kills.
 *
 * Sockets: sock/inet_sock_set_state (4.16+), reduced to connect, accept and close; the family,
 * addresses and the socket's own cgroup are read from the socket through CO-RE. The task fields
 * of the header are whatever task the transition ran in (often a softirq's interrupted task);
 * the cgroup is the socket's, which is what attribution needs.
 *
 * OOM: the raw tracepoint mark_victim, because since 6.8 its first argument is the victim's
 * task_struct (giving the victim's cgroup); before, it is the victim's pid only. Which one the
 * running kernel passes is decided through CO-RE: the task-pointer prototype came with the
 * tracepoint's `uid` field, so bpf_core_field_exists() on it tells them apart. Before 6.8 the
 * victim's task is found where the OOM killer signals it: __oom_kill_process() sends the victim
 * SIGKILL (signal:signal_generate, whose raw arguments include the target task) just before
 * mark_oom_victim(), from the same task, so the signal's program remembers the target under the
 * killing task and mark_victim takes it from there.
 *
 * No loops, no global data: the same object passes a 4.19 verifier.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "kernel.h"
#include "transport.bpf.h"
#include "sock.bpf.h"

/*
 * One per-CPU slot for whichever record a program builds. Naming both record types in a map value
 * also records their layouts in the object's BTF, which the loader's layout test checks.
 */
struct kernel_scratch {
	struct kernel_sock_event sock;
	struct kernel_oom_event oom;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kernel_scratch);
} kernel_scratch SEC(".maps");

static __always_inline __u8 classify(int oldstate, int newstate)
{
	if (newstate == TAPIO_TCP_CLOSE && oldstate != TAPIO_TCP_SYN_SENT)
		return KERNEL_CLOSE;
	if (newstate == TAPIO_TCP_ESTABLISHED && oldstate == TAPIO_TCP_SYN_SENT)
		return KERNEL_CONNECT;
	if (newstate == TAPIO_TCP_ESTABLISHED && oldstate == TAPIO_TCP_SYN_RECV)
		return KERNEL_ACCEPT;
	return 0;
}

static __always_inline int handle_sock(void *ctx, struct sock *sk, int oldstate, int newstate, __u16 protocol)
{
	struct kernel_scratch *slot;
	struct kernel_sock_event *e;
	__u32 zero = 0;
	__u64 sock_cg;
	__u8 kind;

	if (!sk || protocol != TAPIO_IPPROTO_TCP)
		return 0;
	/* A connect that never got an answer opened nothing: SYN_SENT -> CLOSE is not a close. */
	kind = classify(oldstate, newstate);
	if (!kind)
		return 0;
	slot = bpf_map_lookup_elem(&kernel_scratch, &zero);
	if (!slot)
		return 0;
	e = &slot->sock;
	__builtin_memset(e, 0, sizeof(*e));
	tapio_fill_header(&e->hdr, TAPIO_MONITOR_KERNEL, kind);
	if (!tapio_read_flow(&e->flow, sk, TAPIO_IPPROTO_TCP))
		return 0;
	e->oldstate = oldstate;
	e->newstate = newstate;
	sock_cg = tapio_sock_cgroup_id(sk);
	if (sock_cg) {
		e->hdr.cgroup_id = sock_cg;
		e->flags |= KERNEL_F_SOCK_CGROUP;
	}
	tapio_emit(ctx, e, sizeof(*e));
	return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int kernel_sock_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	return handle_sock(ctx, (struct sock *)ctx->skaddr, ctx->oldstate, ctx->newstate, ctx->protocol);
}

/* The victim as its task gives it; `uid` as mark_victim's (from_kuid(&init_user_ns, ...)). */
static __always_inline void read_victim(struct kernel_oom_event *e, struct task_struct___tapio *victim)
{
	e->victim_pid = BPF_CORE_READ(victim, pid);
	e->victim_tgid = BPF_CORE_READ(victim, tgid);
	BPF_CORE_READ_INTO(&e->victim_comm, victim, comm);
	e->victim_cgroup_id = BPF_CORE_READ(victim, cgroups, dfl_cgrp, kn, id);
	e->victim_uid = BPF_CORE_READ(victim, cred, uid.val);
	e->flags = KERNEL_F_VICTIM_TASK | KERNEL_F_VICTIM_UID;
}

/* Before 6.8: the target of the last kernel-sent SIGKILL, by the task that sent it. */
struct kernel_oom_target {
	struct kernel_oom_event victim; /* only the victim_* fields and flags are used */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64); /* pid_tgid of the sender */
	__type(value, struct kernel_oom_target);
} kernel_oom_targets SEC(".maps");

/* <uapi/asm-generic/signal.h> SIGKILL; SEND_SIG_PRIV is ((struct kernel_siginfo *) 1). */
#define TAPIO_SIGKILL 9
#define TAPIO_SEND_SIG_PRIV 1

/*
 * Raw tracepoint signal_generate (sig, info, task, group, result), before 6.8 only: a SIGKILL the
 * kernel itself sends (SEND_SIG_PRIV, as __oom_kill_process() does) remembers its target under
 * the sending task, for mark_victim right after. Any other signal costs two compares; on 6.8+
 * the program returns at once (mark_victim passes the task itself).
 */
SEC("raw_tracepoint/signal_generate")
int kernel_oom_signal(struct bpf_raw_tracepoint_args *ctx)
{
	struct kernel_oom_target t = {};
	struct task_struct___tapio *target;
	__u64 id;

	if (bpf_core_field_exists(struct trace_event_raw_mark_victim, uid))
		return 0;
	if ((int)ctx->args[0] != TAPIO_SIGKILL || ctx->args[1] != TAPIO_SEND_SIG_PRIV)
		return 0;
	target = (struct task_struct___tapio *)ctx->args[2];
	if (!target)
		return 0;
	read_victim(&t.victim, target);
	id = bpf_get_current_pid_tgid();
	bpf_map_update_elem(&kernel_oom_targets, &id, &t, BPF_ANY);
	return 0;
}

/* Raw tracepoint mark_victim: (struct task_struct *task, uid_t uid) since 6.8, (int pid) before. */
SEC("raw_tracepoint/mark_victim")
int kernel_oom_victim(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct___tapio *victim;
	struct kernel_oom_target *t;
	struct kernel_scratch *slot;
	struct kernel_oom_event *e;
	__u32 zero = 0;
	__u64 id;

	slot = bpf_map_lookup_elem(&kernel_scratch, &zero);
	if (!slot)
		return 0;
	e = &slot->oom;
	__builtin_memset(e, 0, sizeof(*e));
	tapio_fill_header(&e->hdr, TAPIO_MONITOR_KERNEL, KERNEL_OOM_KILL);
	if (bpf_core_field_exists(struct trace_event_raw_mark_victim, uid)) {
		victim = (struct task_struct___tapio *)ctx->args[0];
		if (!victim)
			return 0;
		read_victim(e, victim);
		e->victim_uid = (__u32)ctx->args[1];
	} else {
		e->victim_pid = (__u32)ctx->args[0];
		id = bpf_get_current_pid_tgid();
		t = bpf_map_lookup_elem(&kernel_oom_targets, &id);
		if (t && t->victim.victim_pid == e->victim_pid) {
			/* __oom_kill_process(): SIGKILL to the victim, then mark_oom_victim(victim). */
			e->victim_tgid = t->victim.victim_tgid;
			__builtin_memcpy(e->victim_comm, t->victim.victim_comm, sizeof(e->victim_comm));
			e->victim_cgroup_id = t->victim.victim_cgroup_id;
			e->victim_uid = t->victim.victim_uid;
			e->flags = t->victim.flags;
		} else if (e->victim_pid == (__u32)id) {
			/* out_of_memory(): a dying current is marked itself, unsignalled. */
			read_victim(e, (struct task_struct___tapio *)bpf_get_current_task());
		}
		if (t)
			bpf_map_delete_elem(&kernel_oom_targets, &id);
	}
	tapio_emit(ctx, e, sizeof(*e));
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
