/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* The network monitor's record: TCP connect, accept, close and state changes, told apart by hdr.kind. */
#ifndef __TAPIO_NETWORK_H__
#define __TAPIO_NETWORK_H__

#include "common.h"
#include "sock.h"

enum network_kind {
	NETWORK_CONNECT = 1,      /* SYN_SENT -> ESTABLISHED: an outbound connection is up */
	NETWORK_ACCEPT = 2,       /* SYN_RECV -> ESTABLISHED: an inbound connection is up */
	NETWORK_CLOSE = 3,        /* any -> CLOSE */
	NETWORK_STATE_CHANGE = 4, /* every other transition */
};

/* Flags in network_event.flags. */
#define NETWORK_F_BYTES 0x1 /* bytes_sent/bytes_received were read from tcp_sock */
#define NETWORK_F_OWNER 0x2 /* the identity in hdr is the socket's owner, not the interrupted task */
#define NETWORK_F_SOCK_CGROUP 0x4 /* hdr.cgroup_id is the socket's cgroup (sk_cgrp_data) */

/* Sockets whose owner is remembered between connect() and close(); LRU so it cannot fill up. */
#define NETWORK_OWNERS_MAX 16384

struct network_event {
	struct tapio_header hdr;
	struct tapio_flow flow;
	/*
	 * close: tcp_sock.bytes_acked and .bytes_received, the counters `ss -i` shows. They count
	 * sequence space, so besides payload a SYN the peer acknowledged and a FIN each add 1.
	 */
	__u64 bytes_sent;
	__u64 bytes_received;
	__u8 oldstate;        /* enum tapio_tcp_state */
	__u8 newstate;
	__u16 _pad0;
	__u32 flags;          /* NETWORK_F_* */
};
_Static_assert(sizeof(struct network_event) == 48 + 40 + 24, "network_event layout");

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

#endif /* __TAPIO_NETWORK_H__ */
