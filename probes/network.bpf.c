// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * network: TCP connect, accept, close (with byte counts) and state changes, IPv4 and IPv6.
 *
 * One stable tracepoint, sock/inet_sock_set_state (4.16+), sees every TCP state transition with
 * the socket pointer; addresses, ports and family are then read from the socket through CO-RE.
 * It needs neither kprobes nor fentry, so the monitor runs on kernels that have neither.
 *
 * Where the kernel allows more, two pairs of alternative programs add what no tracepoint gives,
 * both in the calling process's own context (the loader takes the first of each pair that loads
 * and attaches, see loader/src/monitors/network.rs):
 * - connect_attempt: tcp_connect() sends the SYN (fexit, with its return value; kprobe, without).
 *   The source port is bound by then (inet_hash_connect runs before it), so the tuple is full.
 * - accept_return: inet_csk_accept() hands the new socket to accept() (fexit or kretprobe).
 * Both also remember the socket's owner, so that later events of an accepted socket carry the
 * acceptor from accept() on, not only from its close().
 *
 * Process context: a transition driven by a packet (the SYN-ACK that completes a connect, the
 * final ACK that completes an accept, the FIN that ends a connection) runs in softirq, where the
 * "current" task is whatever was interrupted, often pid 0. So the owner of an outbound socket is
 * remembered when it calls connect() (CLOSE -> SYN_SENT runs in the caller) and the owner of an
 * inbound socket when accept() returns it (accept_return) or, without that path, when it calls
 * close() or shutdown() (-> FIN_WAIT1 / LAST_ACK run in the caller), and later events of that socket carry the owner (NETWORK_F_OWNER). Events with no owner known
 * (accept, state changes before close() or, where accept_return runs, before accept()) carry the
 * interrupted task as is, and the socket's own cgroup where the kernel has it
 * (NETWORK_F_SOCK_CGROUP).
 *
 * No loops, no global data: the same object passes a 4.19 verifier.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "network.h"
#include "transport.bpf.h"
#include "sock.bpf.h"

/*
 * The record is built in a per-CPU slot rather than on the stack: naming struct network_event as a
 * map value also records its layout in the object's BTF, which the loader's layout test compares
 * with the Rust mirror.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct network_event);
} network_scratch SEC(".maps");

/* Socket pointer -> owner. LRU (4.10+): a socket that never reaches CLOSE cannot pin a slot. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NETWORK_OWNERS_MAX);
	__type(key, __u64);
	__type(value, struct network_owner);
} network_owners SEC(".maps");

static __always_inline void remember_owner(__u64 key, const struct tapio_header *h)
{
	struct network_owner o = {};

	o.cgroup_id = h->cgroup_id;
	o.pid = h->pid;
	o.tgid = h->tgid;
	o.uid = h->uid;
	__builtin_memcpy(o.comm, h->comm, sizeof(o.comm));
	/* The first process-context owner wins: connect() before a later close() by a child. */
	bpf_map_update_elem(&network_owners, &key, &o, BPF_NOEXIST);
}

static __always_inline int apply_owner(struct tapio_header *h, const struct network_owner *o)
{
	if (!o)
		return 0;
	h->cgroup_id = o->cgroup_id;
	h->pid = o->pid;
	h->tgid = o->tgid;
	h->uid = o->uid;
	__builtin_memcpy(h->comm, o->comm, sizeof(h->comm));
	return 1;
}

static __always_inline void read_bytes(struct network_event *e, struct sock *sk)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;

	if (!bpf_core_field_exists(tp->bytes_acked) || !bpf_core_field_exists(tp->bytes_received))
		return;
	e->bytes_sent = BPF_CORE_READ(tp, bytes_acked);
	e->bytes_received = BPF_CORE_READ(tp, bytes_received);
	e->flags |= NETWORK_F_BYTES;
}

/*
 * A connect_attempt or accept_return record of `sk`, built in the calling process (its own
 * syscall), which is remembered as the socket's owner. On the stack, not in network_scratch:
 * fexit programs run preemptible (migrate_disable only), so a tracepoint program on the same CPU
 * could otherwise overwrite a half-built record.
 */
static __always_inline int handle_call(void *ctx, struct sock *sk, __u8 kind, int result, __u32 flags)
{
	struct network_event e = {};
	__u64 key = (__u64)sk;
	__u16 protocol;

	if (!sk)
		return 0;
	protocol = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
	if (protocol != TAPIO_IPPROTO_TCP)
		return 0; /* inet_csk_accept also serves DCCP */
	tapio_fill_header(&e.hdr, TAPIO_MONITOR_NETWORK, kind);
	if (!tapio_read_flow(&e.flow, sk, TAPIO_IPPROTO_TCP))
		return 0;
	e.oldstate = BPF_CORE_READ(sk, __sk_common.skc_state);
	e.newstate = e.oldstate;
	e.result = result;
	e.flags = flags | NETWORK_F_OWNER;
	remember_owner(key, &e.hdr);
	tapio_emit(ctx, &e, sizeof(e));
	return 0;
}

static __always_inline __u8 classify(int oldstate, int newstate)
{
	if (newstate == TAPIO_TCP_CLOSE)
		return NETWORK_CLOSE;
	/*
	 * Not CLOSE -> SYN_SENT: the source port is only bound after that transition
	 * (tcp_v4_connect sets SYN_SENT before inet_hash_connect), so the tuple is complete here.
	 */
	if (newstate == TAPIO_TCP_ESTABLISHED && oldstate == TAPIO_TCP_SYN_SENT)
		return NETWORK_CONNECT;
	if (newstate == TAPIO_TCP_ESTABLISHED && oldstate == TAPIO_TCP_SYN_RECV)
		return NETWORK_ACCEPT;
	return NETWORK_STATE_CHANGE;
}

static __always_inline int handle_state(void *ctx, struct sock *sk, int oldstate, int newstate, __u16 protocol)
{
	struct network_event *e;
	struct network_owner *o;
	__u64 key = (__u64)sk;
	__u32 zero = 0;
	__u64 sock_cg;
	__u8 kind;

	if (!sk || protocol != TAPIO_IPPROTO_TCP)
		return 0;
	e = bpf_map_lookup_elem(&network_scratch, &zero);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	kind = classify(oldstate, newstate);
	tapio_fill_header(&e->hdr, TAPIO_MONITOR_NETWORK, kind);
	if (!tapio_read_flow(&e->flow, sk, TAPIO_IPPROTO_TCP))
		return 0;
	e->oldstate = oldstate;
	e->newstate = newstate;

	/* Transitions that run in the owning process's own system call. */
	if ((oldstate == TAPIO_TCP_CLOSE && newstate == TAPIO_TCP_SYN_SENT) ||
	    newstate == TAPIO_TCP_FIN_WAIT1 || newstate == TAPIO_TCP_LAST_ACK)
		remember_owner(key, &e->hdr);

	/*
	 * Not for accept (SYN_RECV -> ESTABLISHED): it runs in softirq, almost always before the
	 * acceptor's accept() has the socket, but accept() can also take it from the queue while it
	 * is still in SYN_RECV, and accept_return then remembers the owner first. Left unowned, the
	 * event does not depend on that race; accept_return names the acceptor.
	 */
	o = kind == NETWORK_ACCEPT ? NULL : bpf_map_lookup_elem(&network_owners, &key);
	if (apply_owner(&e->hdr, o)) {
		e->flags |= NETWORK_F_OWNER;
	} else {
		sock_cg = tapio_sock_cgroup_id(sk);
		if (sock_cg) {
			e->hdr.cgroup_id = sock_cg;
			e->flags |= NETWORK_F_SOCK_CGROUP;
		}
	}
	if (kind == NETWORK_CLOSE) {
		read_bytes(e, sk);
		bpf_map_delete_elem(&network_owners, &key);
	}
	tapio_emit(ctx, e, sizeof(*e));
	return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int network_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	return handle_state(ctx, (struct sock *)ctx->skaddr, ctx->oldstate, ctx->newstate, ctx->protocol);
}

/*
 * tcp_connect(sk) has had this prototype since before 4.x and serves IPv4 and IPv6 alike
 * (tcp_v4_connect and tcp_v6_connect both end in it). fexit sees its return value.
 */
SEC("fexit/tcp_connect")
int BPF_PROG(network_connect_fexit, struct sock *sk, int ret)
{
	return handle_call(ctx, sk, NETWORK_CONNECT_ATTEMPT, ret, 0);
}

SEC("kprobe/tcp_connect")
int BPF_KPROBE(network_connect_kprobe, struct sock *sk)
{
	return handle_call(ctx, sk, NETWORK_CONNECT_ATTEMPT, 0, NETWORK_F_RESULT_UNKNOWN);
}

/*
 * inet_csk_accept returns the new socket, or NULL on error. Its arguments changed in 6.10 from
 * (sk, flags, err, kern) to (sk, arg), and an fexit context holds the return value right after the
 * arguments: ctx[4] before, ctx[2] since. struct proto_accept_arg came with that change, so its
 * presence in the running kernel's BTF picks the slot. The branch not taken is dead code to the
 * verifier, so the other slot is never checked against the function's prototype.
 *
 * Each slot is read by its own asm load: written as ctx[2] / ctx[4], clang merges the two loads
 * into one through `ctx + (2 or 4) * 8`, and the verifier refuses a load through a modified ctx
 * pointer. A fixed offset in the load instruction itself is what it accepts.
 */
SEC("fexit/inet_csk_accept")
int network_accept_fexit(unsigned long long *ctx)
{
	struct sock *newsk;

	if (bpf_core_type_exists(struct proto_accept_arg))
		asm volatile("%0 = *(u64 *)(%1 + 16)" : "=r"(newsk) : "r"(ctx));
	else
		asm volatile("%0 = *(u64 *)(%1 + 32)" : "=r"(newsk) : "r"(ctx));
	return handle_call(ctx, newsk, NETWORK_ACCEPT_RETURN, 0, 0);
}

SEC("kretprobe/inet_csk_accept")
int BPF_KRETPROBE(network_accept_kretprobe, struct sock *newsk)
{
	return handle_call(ctx, newsk, NETWORK_ACCEPT_RETURN, 0, 0);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
