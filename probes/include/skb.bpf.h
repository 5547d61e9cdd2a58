/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The packet path shared by the dns and network probes: cgroup_skb programs on the cgroup v2 root
 * see every IPv4/IPv6 packet a local socket sends or receives, whatever its network namespace,
 * and nothing else. Unlike syscall tracepoints they cost the node's unrelated work nothing: a
 * read() of a pipe or a file never reaches them, and a packet that is not DNS costs one header
 * load and a port check.
 *
 * Attribution: a cgroup_skb program runs where the packet is (ingress in softirq, where "current"
 * is whatever was interrupted), so the process is never read there. It is recorded where the
 * socket is born instead: a cgroup/sock_create program runs in the process that calls socket()
 * and remembers it under the socket's cookie (bpf_get_socket_cookie, unique for the socket's
 * life, never reused). A socket accept() returns is born in softirq from its listener, so for
 * those the owner of the listener is remembered by local port when its SYN comes in, and the
 * accepted socket takes it over at its first packet. A socket created before the monitor started
 * has no owner: its messages still go out, flagged, with the socket's cgroup.
 *
 * Offsets: for both directions the kernel runs cgroup_skb programs with skb->data at the network
 * header (__cgroup_bpf_run_filter_skb pushes back what the transport layer pulled), so offset 0
 * is the IP header. Only IPv6 packets whose next header is TCP or UDP are read (no extension
 * headers), and only first fragments of IPv4 (a later fragment has no transport header).
 *
 * Include after the libbpf headers and dns_ports.bpf.h, once per .bpf.c (it defines maps).
 */
#ifndef __TAPIO_SKB_BPF_H__
#define __TAPIO_SKB_BPF_H__

#include "sock.h"

#ifndef TAPIO_IPPROTO_UDP
#define TAPIO_IPPROTO_UDP 17
#endif

#define TAPIO_ETH_P_IP 0x0800
#define TAPIO_ETH_P_IPV6 0x86DD

/* TCP header flags (byte 13 of the header). */
#define TAPIO_TCP_FIN 0x01
#define TAPIO_TCP_SYN 0x02
#define TAPIO_TCP_RST 0x04
#define TAPIO_TCP_ACK 0x10

/* Sockets remembered with their owner; LRU, so sockets that close without a trace cannot fill it. */
#define TAPIO_SOCK_OWNERS_MAX 16384
/* TCP listeners remembered by local port, for the sockets they accept. */
#define TAPIO_LISTENERS_MAX 1024

/* Socket cookie -> the process that created the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TAPIO_SOCK_OWNERS_MAX);
	__type(key, __u64);
	__type(value, struct tapio_owner);
} sock_owners SEC(".maps");

/* (protocol << 16 | local port) -> the owner of the listener a SYN came in on. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TAPIO_LISTENERS_MAX);
	__type(key, __u32);
	__type(value, struct tapio_owner);
} sock_listeners SEC(".maps");

/* One packet as the local socket sees it. */
struct tapio_pkt {
	struct tapio_flow flow; /* s* this host's socket, d* the peer */
	__u32 payload_off;      /* offset of the transport payload from the IP header */
	__u32 payload_len;      /* its length, bounded by what the skb holds */
	__u32 seq;              /* TCP: the segment's sequence number */
	__u8 tcp_flags;         /* TCP: the flags byte */
	__u8 _pad0[3];
};

/*
 * cgroup/sock_create: runs in the process calling socket(). Remembers it under the new socket's
 * cookie. Returns 1: the probe observes, it never refuses a socket.
 */
static __always_inline int tapio_sock_created(struct bpf_sock *sk)
{
	struct tapio_owner o = {};
	__u64 id = bpf_get_current_pid_tgid();
	__u64 cookie;

	if (sk->protocol != TAPIO_IPPROTO_UDP && sk->protocol != TAPIO_IPPROTO_TCP)
		return 1;
	cookie = bpf_get_socket_cookie(sk);
	o.cgroup_id = bpf_get_current_cgroup_id();
	o.pid = (__u32)id;
	o.tgid = id >> 32;
	o.uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(o.comm, sizeof(o.comm));
	bpf_map_update_elem(&sock_owners, &cookie, &o, BPF_ANY);
	return 1;
}

/*
 * The cheap test every packet of the node pays: 0 when the packet is surely not DNS (neither TCP
 * nor UDP, or neither port a DNS port), read straight from the packet (direct packet access,
 * cgroup_skb 5.2+, no helper call); 1 when it may be, or when its headers are not in the linear
 * part, where tapio_pkt_parse() then reads them with bpf_skb_load_bytes.
 */
static __always_inline int tapio_pkt_maybe_dns(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u8 *ip = data;
	__u8 *l4;
	__u32 l4_off;
	__u8 proto;

	if (skb->protocol == bpf_htons(TAPIO_ETH_P_IP)) {
		if (data + 20 > end)
			return 1;
		l4_off = (ip[0] & 0x0f) * 4;
		proto = ip[9];
		if (((ip[6] & 0x1f) | ip[7]) != 0)
			return 0;
	} else if (skb->protocol == bpf_htons(TAPIO_ETH_P_IPV6)) {
		if (data + 40 > end)
			return 1;
		l4_off = 40;
		proto = ip[6];
	} else {
		return 0;
	}
	if (proto != TAPIO_IPPROTO_UDP && proto != TAPIO_IPPROTO_TCP)
		return 0;
	if (l4_off < 20 || l4_off > 60)
		return 1;
	l4 = data + l4_off;
	if ((void *)(l4 + 4) > end)
		return 1;
	return tapio_dns_port(((__u16)l4[0] << 8) | l4[1]) || tapio_dns_port(((__u16)l4[2] << 8) | l4[3]);
}

/*
 * Reads the IP and transport headers. Returns 0 for anything but TCP or UDP over IPv4/IPv6 with
 * a whole transport header. `egress`: the local socket is the source, else the destination.
 */
static __always_inline int tapio_pkt_parse(struct __sk_buff *skb, int egress, struct tapio_pkt *p)
{
	__u8 ip[40];
	__u8 l4[20];
	__u32 l4_off, l4_len, total;
	__u8 proto;
	__u16 src_port, dst_port;

	if (skb->protocol == bpf_htons(TAPIO_ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, 0, ip, 20))
			return 0;
		if ((ip[0] >> 4) != 4)
			return 0;
		/* A later fragment carries no transport header. */
		if (((ip[6] & 0x1f) | ip[7]) != 0)
			return 0;
		l4_off = (ip[0] & 0x0f) * 4;
		total = ((__u32)ip[2] << 8) | ip[3];
		proto = ip[9];
		p->flow.ip_version = 4;
		if (egress) {
			__builtin_memcpy(&p->flow.saddr.v4, &ip[12], 4);
			__builtin_memcpy(&p->flow.daddr.v4, &ip[16], 4);
		} else {
			__builtin_memcpy(&p->flow.saddr.v4, &ip[16], 4);
			__builtin_memcpy(&p->flow.daddr.v4, &ip[12], 4);
		}
	} else if (skb->protocol == bpf_htons(TAPIO_ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, 0, ip, 40))
			return 0;
		l4_off = 40;
		total = 40 + (((__u32)ip[4] << 8) | ip[5]);
		proto = ip[6];
		p->flow.ip_version = 6;
		if (egress) {
			__builtin_memcpy(p->flow.saddr.v6, &ip[8], 16);
			__builtin_memcpy(p->flow.daddr.v6, &ip[24], 16);
		} else {
			__builtin_memcpy(p->flow.saddr.v6, &ip[24], 16);
			__builtin_memcpy(p->flow.daddr.v6, &ip[8], 16);
		}
	} else {
		return 0;
	}
	/* GSO packets leave tot_len 0 or stale: what the skb holds is the bound. */
	if (total == 0 || total > skb->len)
		total = skb->len;
	if (proto == TAPIO_IPPROTO_UDP) {
		if (bpf_skb_load_bytes(skb, l4_off, l4, 8))
			return 0;
		l4_len = 8;
	} else if (proto == TAPIO_IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, l4_off, l4, 20))
			return 0;
		l4_len = (l4[12] >> 4) * 4;
		if (l4_len < 20)
			return 0;
		p->seq = ((__u32)l4[4] << 24) | ((__u32)l4[5] << 16) | ((__u32)l4[6] << 8) | l4[7];
		p->tcp_flags = l4[13];
	} else {
		return 0;
	}
	src_port = ((__u16)l4[0] << 8) | l4[1];
	dst_port = ((__u16)l4[2] << 8) | l4[3];
	p->flow.sport = egress ? src_port : dst_port;
	p->flow.dport = egress ? dst_port : src_port;
	p->flow.protocol = proto;
	p->payload_off = l4_off + l4_len;
	p->payload_len = total > p->payload_off ? total - p->payload_off : 0;
	return 1;
}

/* The owner recorded for the packet's socket, if any; see the header comment. */
static __always_inline struct tapio_owner *tapio_pkt_owner(struct __sk_buff *skb, const struct tapio_pkt *p, int egress)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u32 port_key = ((__u32)p->flow.protocol << 16) | p->flow.sport;
	struct tapio_owner *o = bpf_map_lookup_elem(&sock_owners, &cookie);

	if (p->flow.protocol != TAPIO_IPPROTO_TCP)
		return o;
	/* A SYN coming in is on the listener: remember its owner for the sockets it accepts. */
	if (o && !egress && (p->tcp_flags & (TAPIO_TCP_SYN | TAPIO_TCP_ACK)) == TAPIO_TCP_SYN) {
		bpf_map_update_elem(&sock_listeners, &port_key, o, BPF_ANY);
		return o;
	}
	if (o)
		return o;
	o = bpf_map_lookup_elem(&sock_listeners, &port_key);
	if (!o)
		return NULL;
	bpf_map_update_elem(&sock_owners, &cookie, o, BPF_NOEXIST);
	return bpf_map_lookup_elem(&sock_owners, &cookie);
}

/*
 * A record header for a packet: the socket's owner where known (returns 1), else pid 0 and the
 * socket's cgroup (returns 0).
 */
static __always_inline int tapio_pkt_header(struct tapio_header *h, struct __sk_buff *skb, const struct tapio_owner *o,
					    __u8 monitor, __u8 kind)
{
	h->ts_ns = bpf_ktime_get_ns();
	h->monitor = monitor;
	h->kind = kind;
	h->_pad0 = 0;
	if (!o) {
		h->pid = 0;
		h->tgid = 0;
		h->uid = 0;
		h->cgroup_id = bpf_skb_cgroup_id(skb);
		__builtin_memset(h->comm, 0, sizeof(h->comm));
		return 0;
	}
	h->pid = o->pid;
	h->tgid = o->tgid;
	h->uid = o->uid;
	h->cgroup_id = o->cgroup_id;
	__builtin_memcpy(h->comm, o->comm, sizeof(h->comm));
	return 1;
}

#endif /* __TAPIO_SKB_BPF_H__ */
