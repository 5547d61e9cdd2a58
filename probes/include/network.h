/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The network monitor's record: TCP connect, accept, close and state changes, plus the connect
 * attempt and accept's return seen in the calling process, and UDP flows on the DNS ports, told
 * apart by hdr.kind.
 */
#ifndef __TAPIO_NETWORK_H__
#define __TAPIO_NETWORK_H__

#include "common.h"
#include "sock.h"

enum network_kind {
	NETWORK_CONNECT = 1,      /* SYN_SENT -> ESTABLISHED: an outbound connection is up */
	NETWORK_ACCEPT = 2,       /* SYN_RECV -> ESTABLISHED: an inbound connection is up */
	NETWORK_CLOSE = 3,        /* any -> CLOSE */
	NETWORK_STATE_CHANGE = 4, /* every other transition */
	NETWORK_CONNECT_ATTEMPT = 5, /* tcp_connect(): the SYN goes out, in the connecting process */
	NETWORK_ACCEPT_RETURN = 6,   /* inet_csk_accept() returned a socket, in the accepting process */
	NETWORK_UDP_FLOW = 7,        /* a UDP datagram to or from a DNS port, first of its flow in a window */
};

/* Flags in network_event.flags. */
#define NETWORK_F_BYTES 0x1 /* bytes_sent/bytes_received were read from tcp_sock */
#define NETWORK_F_OWNER 0x2 /* the identity in hdr is the socket's owner, not the interrupted task */
#define NETWORK_F_SOCK_CGROUP 0x4 /* hdr.cgroup_id is the socket's cgroup (sk_cgrp_data) */
#define NETWORK_F_RESULT_UNKNOWN 0x8 /* connect_attempt via kprobe: tcp_connect's return is not seen */
#define NETWORK_F_SEND 0x10 /* udp_flow: the process sent the datagram, flow.s* -> flow.d* */
#define NETWORK_F_RECV 0x20 /* udp_flow: the process received it, flow.d* -> flow.s* */

/* Sockets whose owner is remembered between connect() and close(); LRU so it cannot fill up. */
#define NETWORK_OWNERS_MAX 16384
/* udp_flow dedup: flows remembered (LRU: the least recently seen go first), and the window. */
#define NETWORK_UDP_FLOWS_MAX 8192
#define NETWORK_UDP_WINDOW_NS 1000000000ULL

struct network_event {
	struct tapio_header hdr;
	struct tapio_flow flow;
	/*
	 * close: tcp_sock.bytes_acked and .bytes_received, the counters `ss -i` shows. They count
	 * sequence space, so besides payload a SYN the peer acknowledged and a FIN each add 1.
	 */
	__u64 bytes_sent;
	__u64 bytes_received;
	/*
	 * connect_attempt and accept_return: both hold the socket's state when the probe ran (the
	 * loader leaves it out of its output: at accept's return it races with the handshake's end).
	 */
	__u8 oldstate;        /* enum tapio_tcp_state */
	__u8 newstate;
	__u16 _pad0;
	__u32 flags;          /* NETWORK_F_* */
	__s32 result;         /* connect_attempt: tcp_connect's return (0 or -errno), unless RESULT_UNKNOWN */
	/*
	 * udp_flow: datagrams of the same flow (process, tuple, direction) that the probe folded
	 * into this flow's previous udp_flow event, within its window, instead of reporting them.
	 */
	__u32 repeats;
};
_Static_assert(sizeof(struct network_event) == 48 + 40 + 32, "network_event layout");

/* Who a socket belongs to, remembered in process context for events that run in softirq. */
struct network_owner {
	__u64 cgroup_id;
	__u32 pid;
	__u32 tgid;
	__u32 uid;
	__u32 _pad0;
	char comm[TAPIO_COMM_LEN];
};
_Static_assert(sizeof(struct network_owner) == 40, "network_owner layout");

/* udp_flow dedup key: the process, the whole tuple (family and protocol included), the direction. */
struct network_udp_key {
	struct tapio_flow flow; /* zeroed before it is filled: the unused bytes of a v4 address are 0 */
	__u32 tgid;
	__u32 direction;        /* NETWORK_F_SEND or NETWORK_F_RECV */
};
_Static_assert(sizeof(struct network_udp_key) == 48, "network_udp_key layout");

/* udp_flow dedup state of one key. */
struct network_udp_seen {
	__u64 window_start_ns; /* when the flow's last udp_flow event went out */
	__u32 repeats;         /* datagrams folded into it since */
	__u32 _pad0;
};
_Static_assert(sizeof(struct network_udp_seen) == 16, "network_udp_seen layout");

#endif /* __TAPIO_NETWORK_H__ */
