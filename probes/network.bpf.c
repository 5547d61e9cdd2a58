// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * network: TCP connect, accept, close (with byte counts) and state changes, and UDP flows to and
 * from the DNS ports, IPv4 and IPv6.
 *
 * One stable tracepoint, sock/inet_sock_set_state (4.16+), sees every TCP state transition with
 * the socket pointer; addresses, ports and family are then read from the socket through CO-RE.
 * It needs neither kprobes nor fentry, so the monitor runs on kernels that have neither.
 *
 * Where the kernel allows more, two pairs of alternative programs add what no tracepoint gives,
 * both in the calling process's own context (the loader takes the first of each pair that loads
 * and attaches, see loader/crates/catalog/src/network.rs):
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
 * close() or shutdown() (-> FIN_WAIT1 / LAST_ACK run in the caller), and later events of that
 * socket carry the owner (NETWORK_F_OWNER). Events with no owner known
 * (accept, state changes before close() or, where accept_return runs, before accept()) carry the
 * interrupted task as is, and the socket's own cgroup where the kernel has it
 * (NETWORK_F_SOCK_CGROUP).
 *
 * UDP flows (udp_flow): a datagram whose source or destination port is one of `dns_ports` (the
 * same ports the dns monitor parses, filled by the loader) is reported in the process that sent
 * or received it, on syscall tracepoints only, as the dns probe does and with its helpers
 * (sockfd.bpf.h): sends at the entry of sendto, sendmsg and sendmmsg (the data and the address are
 * there; the return value is not), receives at the exit of recvfrom and recvmsg, with the fd and
 * the sockaddr pointer captured at entry, since only the exit knows whether a datagram came in
 * and who sent it. An unconnected socket's peer comes from the syscall's sockaddr. A send on a
 * socket with no local port yet (never bound nor connected) is finished at the syscall's exit
 * instead: the kernel binds the port inside the send (inet_send_prepare -> inet_autobind), so at
 * entry the source port is 0 and the flow's key would differ from every later datagram's. The
 * entry parks the flows by thread and the exit reads the port the send bound; a failed send is
 * then no flow. A resolver
 * sends a datagram or two a lookup and a busy server thousands a second, so each flow (process,
 * tuple, direction) is reported once a window (NETWORK_UDP_WINDOW_NS): repeats inside it are
 * counted in an LRU hash, whose bound is the state's bound, and the count goes out with that
 * flow's next event (`repeats`). write(), read() and recvmmsg() on a UDP socket are not seen.
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
#include "sockfd.bpf.h"
#include "dns_ports.bpf.h"
#include "skb.bpf.h"

/* sendmmsg(): messages looked at per call, as in the dns probe. */
#define NETWORK_MMSG_MAX 2

/* What a UDP receive's entry saw, for its exit. */
struct network_udp_recv {
	struct tapio_flow flow;
	__u64 addr; /* recvfrom() sockaddr, filled by the kernel */
	__u64 msg;  /* recvmsg() msghdr, whose msg_name the kernel fills */
};

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

/* udp_flow dedup: (process, tuple, direction) -> window start and repeats. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NETWORK_UDP_FLOWS_MAX);
	__type(key, struct network_udp_key);
	__type(value, struct network_udp_seen);
} network_udp_seen SEC(".maps");

/* A send on a socket with no local port yet, parked by its entry for its exit. */
struct network_udp_send {
	struct tapio_flow flow[NETWORK_MMSG_MAX]; /* sport 0; the peer filled from the sockaddr */
	__u64 sk;                                 /* struct sock *, whose port the exit reads */
	__u32 n;                                  /* flows filled */
	__u32 mmsg;                               /* sendmmsg: the return value counts messages */
};

/* In-flight UDP sends of an unbound socket by thread. LRU, as network_udp_inflight. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct network_udp_send);
} network_udp_send_inflight SEC(".maps");

/* In-flight UDP receives by thread. LRU: a thread killed inside recvmsg() leaves nothing behind. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct network_udp_recv);
} network_udp_inflight SEC(".maps");

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

/*
 * One datagram of flow `f` (s* this socket, d* the peer) sent or received by the process `h`
 * names (filled by the caller, kind included): a udp_flow record if either port is a DNS port
 * and the flow's window is not open yet. `owner` is NETWORK_F_OWNER when `h` is the process
 * that owns the socket, NETWORK_F_SOCK_CGROUP when only the socket's cgroup is known.
 */
static __always_inline void udp_flow_of(void *ctx, const struct tapio_flow *f, __u32 direction, const struct tapio_header *h,
					__u32 owner)
{
	struct network_udp_key key = {};
	struct network_udp_seen fresh = {}, *seen;
	struct network_event e = {};
	__u64 now = bpf_ktime_get_ns();
	__u32 repeats = 0;

	if (f->protocol != TAPIO_IPPROTO_UDP || !tapio_dns_flow(f))
		return;
	key.flow = *f;
	key.tgid = h->tgid;
	key.direction = direction;
	seen = bpf_map_lookup_elem(&network_udp_seen, &key);
	if (seen) {
		/*
		 * Signed: `now` was read before the lookup, and another CPU may have opened a new
		 * window since, later than `now`. That datagram belongs to the window just opened.
		 */
		if ((__s64)(now - seen->window_start_ns) < (__s64)NETWORK_UDP_WINDOW_NS) {
			__sync_fetch_and_add(&seen->repeats, 1);
			return;
		}
		/*
		 * A new window. Reading and resetting are not one atomic step: a repeat counted on
		 * another CPU between the two is lost, and two CPUs that both find the window expired
		 * both report the flow (the second with repeats 0). Both need the same flow on two
		 * CPUs within nanoseconds, at a window's edge; the count is a floor, not exact.
		 */
		repeats = seen->repeats;
		seen->window_start_ns = now;
		seen->repeats = 0;
	} else {
		fresh.window_start_ns = now;
		/* Another CPU inserted it first: that one reports the flow. */
		if (bpf_map_update_elem(&network_udp_seen, &key, &fresh, BPF_NOEXIST))
			return;
	}
	e.hdr = *h;
	e.flow = *f;
	e.flags = direction | owner;
	e.repeats = repeats;
	tapio_emit(ctx, &e, sizeof(e));
}

/* udp_flow_of() for the syscall path: the current process sent or received the datagram. */
static __always_inline void udp_flow(void *ctx, const struct tapio_flow *f, __u32 direction)
{
	struct tapio_header h;

	if (f->protocol != TAPIO_IPPROTO_UDP || !tapio_dns_flow(f))
		return;
	tapio_fill_header(&h, TAPIO_MONITOR_NETWORK, NETWORK_UDP_FLOW);
	udp_flow_of(ctx, f, direction, &h, NETWORK_F_OWNER);
}

/*
 * The flows of one send, peers filled: reported now if the socket has its local port, else
 * parked for the syscall's exit (see the header comment).
 */
static __always_inline void udp_send_flows(void *ctx, struct network_udp_send *s)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 i;

	if (s->flow[0].sport) {
#pragma unroll
		for (i = 0; i < NETWORK_MMSG_MAX; i++) {
			if (i < s->n)
				udp_flow(ctx, &s->flow[i], NETWORK_F_SEND);
		}
		return;
	}
	/* No DNS port among the peers: no flow, whatever source port the kernel picks. */
	if (!tapio_dns_flow(&s->flow[0]) && !(s->n > 1 && tapio_dns_flow(&s->flow[1])))
		return;
	bpf_map_update_elem(&network_udp_send_inflight, &id, s, BPF_ANY);
}

/* The peer of one msghdr (sendmsg, each of sendmmsg's): msg_name, its first field. */
static __always_inline void udp_msghdr_peer(struct tapio_flow *f, __u64 umsg)
{
	__u64 name = 0;

	if (!umsg || bpf_probe_read_user(&name, sizeof(name), (void *)umsg))
		return;
	tapio_peer_from_sockaddr(f, name);
}

/* The UDP socket behind `fd` as the first flow of `s`; 0 if it is none. */
static __always_inline int udp_send_sock(struct network_udp_send *s, __u64 fd)
{
	struct sock *sk = NULL;

	if (!tapio_flow_sock_of_fd(fd, &s->flow[0], &sk) || s->flow[0].protocol != TAPIO_IPPROTO_UDP)
		return 0;
	s->sk = (__u64)sk;
	s->n = 1;
	return 1;
}

/*
 * Send exit, for a send its entry parked: the local port is bound now, unless the send failed
 * before binding it, and a failed send is no flow. sendmmsg returns the messages sent, the others
 * bytes (0 is an empty datagram, still sent).
 */
static __always_inline int udp_send_exit(struct syscall_trace_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct network_udp_send *parked;
	struct tapio_flow f;
	struct sock *sk;
	long ret = ctx->ret;
	__u16 sport = 0;
	__u32 n, i;

	parked = bpf_map_lookup_elem(&network_udp_send_inflight, &id);
	if (!parked)
		return 0;
	sk = (struct sock *)parked->sk;
	n = parked->n;
	if (parked->mmsg && ret >= 0 && ret < n)
		n = ret;
	if (ret < 0 || !sk)
		n = 0;
	if (n)
		sport = BPF_CORE_READ(sk, __sk_common.skc_num);
#pragma unroll
	for (i = 0; i < NETWORK_MMSG_MAX; i++) {
		if (i < n && sport) {
			f = parked->flow[i];
			f.sport = sport;
			udp_flow(ctx, &f, NETWORK_F_SEND);
		}
	}
	bpf_map_delete_elem(&network_udp_send_inflight, &id);
	return 0;
}

/* Receive entry: note the flow and where the sender's address will land, if it may be DNS. */
static __always_inline int udp_recv_enter(__u64 fd, __u64 uaddr, __u64 umsg)
{
	struct network_udp_recv args = {};
	__u64 id = bpf_get_current_pid_tgid();

	if (!tapio_flow_of_fd(fd, &args.flow) || args.flow.protocol != TAPIO_IPPROTO_UDP)
		return 0;
	if (!tapio_dns_recv_candidate(&args.flow, uaddr, umsg))
		return 0;
	args.addr = uaddr;
	args.msg = umsg;
	bpf_map_update_elem(&network_udp_inflight, &id, &args, BPF_ANY);
	return 0;
}

/*
 * Receive exit: a positive return is a datagram that came in. An error is no flow, and neither
 * is 0: a zero-length datagram carries no DNS message, and 0 is also what a receive on a shut-down
 * socket returns.
 */
static __always_inline int udp_recv_exit(struct syscall_trace_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct network_udp_recv *args;
	struct tapio_flow f;
	__u64 uaddr;

	args = bpf_map_lookup_elem(&network_udp_inflight, &id);
	if (!args)
		return 0;
	f = args->flow;
	uaddr = args->addr;
	if (args->msg && bpf_probe_read_user(&uaddr, sizeof(uaddr), (void *)args->msg))
		uaddr = 0;
	bpf_map_delete_elem(&network_udp_inflight, &id);
	if (ctx->ret <= 0)
		return 0;
	tapio_peer_from_sockaddr(&f, uaddr);
	udp_flow(ctx, &f, NETWORK_F_RECV);
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

SEC("tracepoint/syscalls/sys_enter_sendto")
int network_udp_sendto(struct syscall_trace_enter *ctx)
{
	struct network_udp_send s = {};

	if (udp_send_sock(&s, ctx->args[0])) {
		tapio_peer_from_sockaddr(&s.flow[0], ctx->args[4]);
		udp_send_flows(ctx, &s);
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_sendto")
int network_udp_sendto_exit(struct syscall_trace_exit *ctx)
{
	return udp_send_exit(ctx);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int network_udp_sendmsg(struct syscall_trace_enter *ctx)
{
	struct network_udp_send s = {};

	if (udp_send_sock(&s, ctx->args[0])) {
		udp_msghdr_peer(&s.flow[0], ctx->args[1]);
		udp_send_flows(ctx, &s);
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int network_udp_sendmsg_exit(struct syscall_trace_exit *ctx)
{
	return udp_send_exit(ctx);
}

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int network_udp_sendmmsg(struct syscall_trace_enter *ctx)
{
	struct network_udp_send s = {};
	__u64 vec = ctx->args[1], vlen = ctx->args[2];

	if (!vlen || !udp_send_sock(&s, ctx->args[0]))
		return 0;
	s.mmsg = 1;
	/* The socket's own flow for each message, before its peer is filled in. */
	s.flow[1] = s.flow[0];
	udp_msghdr_peer(&s.flow[0], vec);
	if (vlen > 1) {
		udp_msghdr_peer(&s.flow[1], vec + TAPIO_USER_MMSGHDR_SIZE);
		s.n = 2;
	}
	udp_send_flows(ctx, &s);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int network_udp_sendmmsg_exit(struct syscall_trace_exit *ctx)
{
	return udp_send_exit(ctx);
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int network_udp_recvfrom_enter(struct syscall_trace_enter *ctx)
{
	return udp_recv_enter(ctx->args[0], ctx->args[4], 0);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int network_udp_recvfrom_exit(struct syscall_trace_exit *ctx)
{
	return udp_recv_exit(ctx);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int network_udp_recvmsg_enter(struct syscall_trace_enter *ctx)
{
	return udp_recv_enter(ctx->args[0], 0, ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int network_udp_recvmsg_exit(struct syscall_trace_exit *ctx)
{
	return udp_recv_exit(ctx);
}

/*
 * udp_flow from the packets (the default where the kernel allows it; the syscall programs above
 * are its fallback): see probes/include/skb.bpf.h. Every datagram a local socket sends or
 * receives, in any network namespace, attributed to the socket's owner.
 */
static __always_inline int network_skb(struct __sk_buff *skb, int egress)
{
	struct tapio_pkt p = {};
	struct tapio_header h;
	struct tapio_owner *o;
	__u32 owner;

	if (!tapio_pkt_maybe_dns(skb) || !tapio_pkt_parse(skb, egress, &p) || p.flow.protocol != TAPIO_IPPROTO_UDP ||
	    !tapio_dns_flow(&p.flow))
		return 1;
	o = tapio_pkt_owner(skb, &p, egress);
	owner = tapio_pkt_header(&h, skb, o, TAPIO_MONITOR_NETWORK, NETWORK_UDP_FLOW) ? NETWORK_F_OWNER : NETWORK_F_SOCK_CGROUP;
	udp_flow_of(skb, &p.flow, egress ? NETWORK_F_SEND : NETWORK_F_RECV, &h, owner);
	return 1;
}

SEC("cgroup/sock_create")
int network_sock_create(struct bpf_sock *sk)
{
	return tapio_sock_created(sk);
}

SEC("cgroup_skb/egress")
int network_skb_egress(struct __sk_buff *skb)
{
	return network_skb(skb, 1);
}

SEC("cgroup_skb/ingress")
int network_skb_ingress(struct __sk_buff *skb)
{
	return network_skb(skb, 0);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
