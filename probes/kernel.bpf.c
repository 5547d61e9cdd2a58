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
 * tracepoint's `uid` field, so bpf_core_field_exists() on it tells them apart.
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

/* Raw tracepoint mark_victim: (struct task_struct *task, uid_t uid) since 6.8, (int pid) before. */
SEC("raw_tracepoint/mark_victim")
int kernel_oom_victim(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct___tapio *victim;
	struct kernel_scratch *slot;
	struct kernel_oom_event *e;
	__u32 zero = 0;

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
		e->victim_pid = BPF_CORE_READ(victim, pid);
		e->victim_tgid = BPF_CORE_READ(victim, tgid);
		BPF_CORE_READ_INTO(&e->victim_comm, victim, comm);
		e->victim_cgroup_id = BPF_CORE_READ(victim, cgroups, dfl_cgrp, kn, id);
		e->victim_uid = (__u32)ctx->args[1];
		e->flags = KERNEL_F_VICTIM_TASK | KERNEL_F_VICTIM_UID;
	} else {
		e->victim_pid = (__u32)ctx->args[0];
	}
	tapio_emit(ctx, e, sizeof(*e));
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
