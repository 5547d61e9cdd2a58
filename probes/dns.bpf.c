// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * dns: DNS queries and responses read from the user buffers of send and receive syscalls, UDP
 * and TCP, IPv4 and IPv6.
 *
 * Why syscall tracepoints: they exist on every kernel we target and need neither kprobes nor
 * fentry. From a syscall's fd the probe walks current->files to the struct socket and its sock
 * (all through CO-RE) for the transport, both addresses and both ports; an unconnected UDP
 * socket (a server, or sendto() with an address) takes the peer from the sockaddr the syscall
 * carries. A message is DNS when either port is in `dns_ports`: source port 53 marks a response
 * as surely as destination port 53 marks a query, so both are checked.
 *
 * Receives are read at the syscall's exit: the entry only records where the data will land, and
 * the return value gives the real length. Sends are read at entry, where the data already is.
 *
 * Why the name is decoded in user space: decompressing a name with every label length and
 * pointer checked takes up to 255 steps; unrolled without loops (4.19's verifier takes none) that
 * is thousands of instructions per call site, past 4.19's 4096-instruction program limit. The
 * probe parses the fixed header and copies up to DNS_MSG_MAX bytes with the real length beside
 * them; the loader decodes the question against that real length (loader/crates/decode/src/dns_wire.rs).
 *
 * No loops, no global data: the port knob is a map the loader fills, as 4.19 has no .rodata maps.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "dns.h"
#include "transport.bpf.h"
#include "sock.bpf.h"
#include "sockfd.bpf.h"
#include "dns_ports.bpf.h"
#include "skb.bpf.h"

/* sendmmsg(): messages looked at per call; glibc sends its A and AAAA queries as two. */
#define DNS_MMSG_MAX 2

/* What a receive syscall's entry saw, for its exit. */
struct dns_recv_args {
	struct tapio_flow flow;
	__u64 buf;      /* read()/recvfrom() buffer */
	__u64 buf_len;  /* its size */
	__u64 addr;     /* recvfrom() sockaddr, filled by the kernel */
	__u64 msg;      /* recvmsg() msghdr */
};

/* In-flight receives by thread. LRU, so a thread killed inside recvmsg() leaves nothing behind. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct dns_recv_args);
} dns_recv_inflight SEC(".maps");

/*
 * The syscall path's message-carrying record, too large for the 512-byte stack. Safe as one
 * per-CPU slot there: syscall tracepoint programs run with preemption off, and a program that
 * interrupts them (a softirq's) is kept off by the kernel's per-CPU bpf_prog_active guard of
 * tracepoint programs, or is a packet program, which never uses this slot. The packet path cannot
 * use it: cgroup_skb programs run with migration off only (preemptible on PREEMPT and PREEMPT_RT
 * kernels), an egress program runs in process context and in softirq alike, and nothing keeps one
 * from nesting into another on the same CPU, so it writes its record into the ring (ring build)
 * or has the kernel copy the message from the packet (perf build) instead (dns_skb_msg).
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dns_msg_event);
} dns_scratch SEC(".maps");

/*
 * A datagram on a DNS port too short to hold the DNS header: reported, marked, never dropped and
 * never parsed. Whether it is a query or a response follows from which end owns the DNS port.
 */
static __always_inline void dns_runt(void *ctx, struct tapio_flow *f, __u8 dir, __u64 len)
{
	struct dns_event base = {};
	bool server = tapio_dns_port(f->sport);
	bool response = (dir == DNS_DIR_SEND) == server;

	tapio_fill_header(&base.hdr, TAPIO_MONITOR_DNS, response ? DNS_RESPONSE : DNS_QUERY);
	base.flow = *f;
	base.msg_len = len > 0xffffffff ? 0xffffffff : (__u32)len;
	base.direction = dir;
	base.flags = DNS_F_RUNT;
	tapio_emit(ctx, &base, sizeof(base));
}

/*
 * Emits one DNS message found at user address `buf`: `avail` bytes are in the buffer, `len` is
 * the real length the syscall reported (larger than `avail` if the buffer was too small).
 *
 * TCP carries a 2-byte length before each message. A buffer that starts with a prefix whose value
 * fits what was read is taken as prefixed; a bare 2-byte read is the prefix alone and is skipped;
 * anything else is taken as a message read after its prefix (glibc reads the two apart).
 */
static __always_inline void dns_capture(void *ctx, struct tapio_flow *f, __u8 dir, __u64 buf, __u64 len,
					__u64 avail)
{
	struct dns_event base = {};
	struct dns_msg_event *e;
	__u8 wire[DNS_HDR_LEN];
	__u32 zero = 0, cap;
	__u64 rd;
	__u64 off = 0;

	if (avail > len)
		avail = len;
	if (!buf || avail == 0)
		return;
	if (avail < DNS_HDR_LEN) {
		/* TCP reads come in pieces (a prefix alone, say): only a UDP datagram is a whole runt. */
		if (f->protocol != TAPIO_IPPROTO_TCP)
			dns_runt(ctx, f, dir, len);
		return;
	}
	if (f->protocol == TAPIO_IPPROTO_TCP) {
		__u8 prefix[2];
		__u64 plen;

		if (bpf_probe_read_user(prefix, sizeof(prefix), (void *)buf))
			return;
		plen = ((__u64)prefix[0] << 8) | prefix[1];
		if (plen >= DNS_HDR_LEN && plen + 2 <= avail) {
			off = 2;
			len = plen;
			avail = plen;
			base.flags |= DNS_F_TCP_PREFIX;
		}
	}
	if (bpf_probe_read_user(wire, sizeof(wire), (void *)(buf + off)))
		return;

	base.dns_flags = ((__u16)wire[2] << 8) | wire[3];
	tapio_fill_header(&base.hdr, TAPIO_MONITOR_DNS, (base.dns_flags & 0x8000) ? DNS_RESPONSE : DNS_QUERY);
	base.flow = *f;
	base.dns_id = ((__u16)wire[0] << 8) | wire[1];
	base.qdcount = ((__u16)wire[4] << 8) | wire[5];
	base.ancount = ((__u16)wire[6] << 8) | wire[7];
	base.msg_len = len > 0xffffffff ? 0xffffffff : (__u32)len;
	base.direction = dir;

	e = bpf_map_lookup_elem(&dns_scratch, &zero);
	if (!e) {
		/* Under memory pressure the event still goes out, header only, marked. */
		base.flags |= DNS_F_NO_SCRATCH;
		tapio_emit(ctx, &base, sizeof(base));
		return;
	}
	e->base = base;
	cap = avail > DNS_MSG_MAX ? DNS_MSG_MAX : (__u32)avail;
	if (cap < DNS_HDR_LEN)
		return;
	rd = cap;
	TAPIO_BOUND_SIZE(rd, DNS_MSG_MAX);
	if (bpf_probe_read_user(e->msg, rd, (void *)(buf + off))) {
		e->base.flags |= DNS_F_READ_FAILED;
		tapio_emit(ctx, &e->base, sizeof(e->base));
		return;
	}
	e->base.cap_len = cap;
	tapio_emit(ctx, e, sizeof(*e));
}

/* A send of one buffer (sendto, write) on `fd`, to `uaddr` if the socket is unconnected. */
static __always_inline int dns_send_buf(void *ctx, __u64 fd, __u64 buf, __u64 len, __u64 uaddr)
{
	struct tapio_flow f = {};

	if (!tapio_flow_of_fd(fd, &f))
		return 0;
	tapio_peer_from_sockaddr(&f, uaddr);
	if (tapio_dns_flow(&f))
		dns_capture(ctx, &f, DNS_DIR_SEND, buf, len, len);
	return 0;
}

/*
 * A send from an iovec array (sendmsg, sendmmsg, writev). Only the first iovec is read, except
 * that a 2-byte first iovec on TCP is the length prefix written apart (glibc and libuv clients
 * do this) and the message is the second.
 */
static __always_inline void dns_send_iov(void *ctx, struct tapio_flow *f, __u64 uiov, __u64 iovlen)
{
	struct tapio_user_iovec iov;

	if (!uiov || iovlen == 0)
		return;
	if (bpf_probe_read_user(&iov, sizeof(iov), (void *)uiov))
		return;
	if (f->protocol == TAPIO_IPPROTO_TCP && iov.len == 2 && iovlen >= 2) {
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(uiov + sizeof(iov))))
			return;
	}
	dns_capture(ctx, f, DNS_DIR_SEND, iov.base, iov.len, iov.len);
}

static __always_inline void dns_send_msghdr(void *ctx, struct tapio_flow *sock_flow, __u64 umsg)
{
	struct tapio_user_msghdr msg;
	struct tapio_flow f = *sock_flow;

	if (!umsg || bpf_probe_read_user(&msg, sizeof(msg), (void *)umsg))
		return;
	tapio_peer_from_sockaddr(&f, msg.name);
	if (tapio_dns_flow(&f))
		dns_send_iov(ctx, &f, msg.iov, msg.iovlen);
}

/* Receive entry: note where the data will land, if the socket may carry DNS. */
static __always_inline int dns_recv_enter(__u64 fd, __u64 buf, __u64 buf_len, __u64 uaddr, __u64 umsg)
{
	struct dns_recv_args args = {};
	__u64 id = bpf_get_current_pid_tgid();

	if (!tapio_flow_of_fd(fd, &args.flow))
		return 0;
	if (!tapio_dns_recv_candidate(&args.flow, uaddr, umsg))
		return 0;
	args.buf = buf;
	args.buf_len = buf_len;
	args.addr = uaddr;
	args.msg = umsg;
	bpf_map_update_elem(&dns_recv_inflight, &id, &args, BPF_ANY);
	return 0;
}

/* Receive exit: the return value is the real length; read the data the entry pointed at. */
static __always_inline int dns_recv_exit(struct syscall_trace_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct dns_recv_args *args;
	struct tapio_flow f;
	__u64 buf, avail, uaddr;
	long ret = ctx->ret;

	args = bpf_map_lookup_elem(&dns_recv_inflight, &id);
	if (!args)
		return 0;
	f = args->flow;
	buf = args->buf;
	avail = args->buf_len;
	uaddr = args->addr;
	if (args->msg) {
		struct tapio_user_msghdr msg;
		struct tapio_user_iovec iov;

		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)args->msg) || !msg.iov || msg.iovlen == 0 ||
		    bpf_probe_read_user(&iov, sizeof(iov), (void *)msg.iov)) {
			bpf_map_delete_elem(&dns_recv_inflight, &id);
			return 0;
		}
		/* Only the first iovec is read: DNS clients and servers receive into one buffer. */
		buf = iov.base;
		avail = iov.len;
		uaddr = msg.name;
	}
	bpf_map_delete_elem(&dns_recv_inflight, &id);
	if (ret <= 0)
		return 0;
	tapio_peer_from_sockaddr(&f, uaddr);
	if (tapio_dns_flow(&f))
		dns_capture(ctx, &f, DNS_DIR_RECV, buf, (__u64)ret, avail);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int dns_sendto(struct syscall_trace_enter *ctx)
{
	return dns_send_buf(ctx, ctx->args[0], ctx->args[1], ctx->args[2], ctx->args[4]);
}

SEC("tracepoint/syscalls/sys_enter_write")
int dns_write(struct syscall_trace_enter *ctx)
{
	return dns_send_buf(ctx, ctx->args[0], ctx->args[1], ctx->args[2], 0);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int dns_sendmsg(struct syscall_trace_enter *ctx)
{
	struct tapio_flow f = {};

	if (tapio_flow_of_fd(ctx->args[0], &f))
		dns_send_msghdr(ctx, &f, ctx->args[1]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int dns_sendmmsg(struct syscall_trace_enter *ctx)
{
	struct tapio_flow f = {};
	__u64 vec = ctx->args[1], vlen = ctx->args[2];
	__u32 i;

	if (!tapio_flow_of_fd(ctx->args[0], &f))
		return 0;
#pragma unroll
	for (i = 0; i < DNS_MMSG_MAX; i++) {
		if (i < vlen)
			dns_send_msghdr(ctx, &f, vec + i * TAPIO_USER_MMSGHDR_SIZE);
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_writev")
int dns_writev(struct syscall_trace_enter *ctx)
{
	struct tapio_flow f = {};

	if (tapio_flow_of_fd(ctx->args[0], &f) && tapio_dns_flow(&f))
		dns_send_iov(ctx, &f, ctx->args[1], ctx->args[2]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int dns_recvfrom_enter(struct syscall_trace_enter *ctx)
{
	return dns_recv_enter(ctx->args[0], ctx->args[1], ctx->args[2], ctx->args[4], 0);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int dns_recvfrom_exit(struct syscall_trace_exit *ctx)
{
	return dns_recv_exit(ctx);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int dns_recvmsg_enter(struct syscall_trace_enter *ctx)
{
	return dns_recv_enter(ctx->args[0], 0, 0, 0, ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int dns_recvmsg_exit(struct syscall_trace_exit *ctx)
{
	return dns_recv_exit(ctx);
}

SEC("tracepoint/syscalls/sys_enter_read")
int dns_read_enter(struct syscall_trace_enter *ctx)
{
	return dns_recv_enter(ctx->args[0], ctx->args[1], ctx->args[2], 0, 0);
}

SEC("tracepoint/syscalls/sys_exit_read")
int dns_read_exit(struct syscall_trace_exit *ctx)
{
	return dns_recv_exit(ctx);
}

/*
 * Packet path (the default where the kernel allows it; the syscall programs above are its
 * fallback). See probes/include/skb.bpf.h for where the packets come from and how they are
 * attributed, and the loader's monitors/dns.rs for how the path is chosen.
 */

/* TCP framing state per connection and direction. LRU: a connection that dies unseen goes. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct dns_tcp_stream_key);
	__type(value, struct dns_tcp_stream);
} dns_tcp_streams SEC(".maps");

/*
 * One DNS message in the packet: `len` is its real length (the UDP payload or the TCP prefix),
 * `avail` the bytes of it the packet holds from `off` on.
 */
static __always_inline void dns_skb_msg(struct __sk_buff *skb, const struct tapio_pkt *p, const struct tapio_owner *o,
					__u8 dir, __u32 off, __u32 len, __u32 avail, __u32 flags)
{
	struct dns_event base = {};
	__u8 wire[DNS_HDR_LEN];
	__u32 cap;
#ifndef TAPIO_PERF
	struct dns_msg_event *e;
	__u64 rd;
#endif

	if (avail > len)
		avail = len;
	flags |= DNS_F_PACKET;
	if (avail < DNS_HDR_LEN) {
		/* A TCP message cut by the segment is read no further; a UDP one is a whole runt. */
		if (p->flow.protocol == TAPIO_IPPROTO_TCP || len >= DNS_HDR_LEN)
			return;
		if (!tapio_pkt_header(&base.hdr, skb, o, TAPIO_MONITOR_DNS, 0))
			flags |= DNS_F_NO_OWNER;
		base.hdr.kind = (dir == DNS_DIR_SEND) == tapio_dns_port(p->flow.sport) ? DNS_RESPONSE : DNS_QUERY;
		base.flow = p->flow;
		base.msg_len = len;
		base.direction = dir;
		base.flags = flags | DNS_F_RUNT;
		tapio_emit(skb, &base, sizeof(base));
		return;
	}
	if (bpf_skb_load_bytes(skb, off, wire, sizeof(wire)))
		return;
	base.dns_flags = ((__u16)wire[2] << 8) | wire[3];
	if (!tapio_pkt_header(&base.hdr, skb, o, TAPIO_MONITOR_DNS, (base.dns_flags & 0x8000) ? DNS_RESPONSE : DNS_QUERY))
		flags |= DNS_F_NO_OWNER;
	base.flow = p->flow;
	base.dns_id = ((__u16)wire[0] << 8) | wire[1];
	base.qdcount = ((__u16)wire[4] << 8) | wire[5];
	base.ancount = ((__u16)wire[6] << 8) | wire[7];
	base.msg_len = len;
	base.direction = dir;
	base.flags = flags;
	cap = avail > DNS_MSG_MAX ? DNS_MSG_MAX : avail;
#ifdef TAPIO_PERF
	/* The message goes out from the packet itself, after the record: nothing staged. */
	base.cap_len = cap;
	base.tail_off = off;
	base.flags |= DNS_F_SKB_TAIL;
	tapio_emit_skb_tail(skb, &base, sizeof(base), off + cap);
#else
	/* Written in place in the ring: no per-CPU slot another program could write meanwhile. */
	e = tapio_reserve(sizeof(*e));
	if (!e)
		return;
	e->base = base;
	rd = cap;
	TAPIO_BOUND_SIZE(rd, DNS_MSG_MAX);
	if (bpf_skb_load_bytes(skb, off, e->msg, rd))
		e->base.flags |= DNS_F_READ_FAILED; /* cap_len stays 0: no message bytes */
	else
		e->base.cap_len = cap;
	tapio_submit(e, sizeof(*e));
#endif
}

/*
 * One prefixed message at stream position `*seq` (payload offset `*off`, `*left` bytes left in
 * the segment), if the next prefix is due there. Returns 1 when another may follow it.
 */
static __always_inline int dns_tcp_prefixed(struct __sk_buff *skb, const struct tapio_pkt *p,
					    const struct tapio_owner *o, __u8 dir, struct dns_tcp_stream *st,
					    __u32 *seq, __u32 *off, __u32 *left)
{
	__u8 prefix[2];
	__u32 plen, step;

	if (*left < 2 || *seq != st->next_prefix)
		return 0;
	if (bpf_skb_load_bytes(skb, *off, prefix, sizeof(prefix)))
		return 0;
	plen = ((__u32)prefix[0] << 8) | prefix[1];
	st->next_prefix = *seq + 2 + plen;
	if (*left == 2) {
		/* The prefix alone: its message starts the next segment. */
		st->body_seq = *seq + 2;
		st->body_len = plen;
		return 0;
	}
	dns_skb_msg(skb, p, o, dir, *off + 2, plen, *left - 2, DNS_F_TCP_PREFIX);
	step = 2 + plen;
	if (step >= *left)
		return 0;
	*seq += step;
	*off += step;
	*left -= step;
	return 1;
}

/*
 * The DNS messages a TCP segment starts, framed by the stream position: a 2-byte prefix is read
 * only where the previous message of this direction ended (from the SYN on), so a message is
 * never mistaken for a prefix, whatever its bytes. A connection seen from its middle (opened
 * before the monitor) has no position and is not read; neither is a prefix split over two
 * segments, after which the connection's framing is lost.
 */
static __always_inline void dns_skb_tcp(struct __sk_buff *skb, const struct tapio_pkt *p, const struct tapio_owner *o,
					__u8 dir)
{
	struct dns_tcp_stream_key key = {};
	struct dns_tcp_stream *st;
	__u32 seq = p->seq, off = p->payload_off, left = p->payload_len;
	__u32 plen, step;

	key.flow = p->flow;
	key.direction = dir;
	if (p->tcp_flags & TAPIO_TCP_SYN) {
		struct dns_tcp_stream fresh = { .next_prefix = seq + 1 };

		bpf_map_update_elem(&dns_tcp_streams, &key, &fresh, BPF_ANY);
		return;
	}
	st = bpf_map_lookup_elem(&dns_tcp_streams, &key);
	if (!st)
		return;
	if (p->tcp_flags & TAPIO_TCP_RST) {
		bpf_map_delete_elem(&dns_tcp_streams, &key);
		return;
	}
	if (left == 0)
		goto out;
	if (st->body_len && seq == st->body_seq) {
		plen = st->body_len;
		st->body_len = 0;
		dns_skb_msg(skb, p, o, dir, off, plen, left, DNS_F_TCP_PREFIX);
		step = plen < left ? plen : left;
		seq += step;
		off += step;
		left -= step;
	}
	/* Unrolled by hand: DNS_TCP_MSGS_PER_SEGMENT (2) messages at most. */
	if (dns_tcp_prefixed(skb, p, o, dir, st, &seq, &off, &left))
		dns_tcp_prefixed(skb, p, o, dir, st, &seq, &off, &left);
out:
	if (p->tcp_flags & TAPIO_TCP_FIN)
		bpf_map_delete_elem(&dns_tcp_streams, &key);
}

static __always_inline int dns_skb(struct __sk_buff *skb, __u8 dir)
{
	struct tapio_pkt p = {};
	struct tapio_owner *o;
	int egress = dir == DNS_DIR_SEND;

	if (!tapio_pkt_maybe_dns(skb) || !tapio_pkt_parse(skb, egress, &p) || !tapio_dns_flow(&p.flow))
		return 1;
	o = tapio_pkt_owner(skb, &p, egress);
	if (p.flow.protocol == TAPIO_IPPROTO_TCP)
		dns_skb_tcp(skb, &p, o, dir);
	else
		dns_skb_msg(skb, &p, o, dir, p.payload_off, p.payload_len, p.payload_len, 0);
	return 1;
}

SEC("cgroup/sock_create")
int dns_sock_create(struct bpf_sock *sk)
{
	return tapio_sock_created(sk);
}

SEC("cgroup_skb/egress")
int dns_skb_egress(struct __sk_buff *skb)
{
	return dns_skb(skb, DNS_DIR_SEND);
}

SEC("cgroup_skb/ingress")
int dns_skb_ingress(struct __sk_buff *skb)
{
	return dns_skb(skb, DNS_DIR_RECV);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
