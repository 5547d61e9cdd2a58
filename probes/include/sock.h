/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The connection tuple the network and kernel monitors both report. Kept in one header so the two
 * monitors' records cannot drift apart; each monitor still has its own <probe>.h for its events.
 */
#ifndef __TAPIO_SOCK_H__
#define __TAPIO_SOCK_H__

/* Values the kernel uses (include/linux/socket.h, include/uapi/linux/in.h, include/net/tcp_states.h). */
#define TAPIO_AF_INET 2
#define TAPIO_AF_INET6 10
#define TAPIO_IPPROTO_TCP 6

enum tapio_tcp_state {
	TAPIO_TCP_ESTABLISHED = 1,
	TAPIO_TCP_SYN_SENT = 2,
	TAPIO_TCP_SYN_RECV = 3,
	TAPIO_TCP_FIN_WAIT1 = 4,
	TAPIO_TCP_FIN_WAIT2 = 5,
	TAPIO_TCP_TIME_WAIT = 6,
	TAPIO_TCP_CLOSE = 7,
	TAPIO_TCP_CLOSE_WAIT = 8,
	TAPIO_TCP_LAST_ACK = 9,
	TAPIO_TCP_LISTEN = 10,
	TAPIO_TCP_CLOSING = 11,
	TAPIO_TCP_NEW_SYN_RECV = 12,
};

/* One address slot for both families: IPv4 uses the first 4 bytes, network byte order. */
union tapio_addr {
	__u8 v6[16];
	__u32 v4;
};

/* Addresses as the local socket sees them: s* is this host's end, d* the peer's. */
struct tapio_flow {
	union tapio_addr saddr;
	union tapio_addr daddr;
	__u16 sport;      /* host byte order */
	__u16 dport;      /* host byte order */
	__u8 ip_version;  /* 4 or 6, from the socket's family read through CO-RE */
	__u8 protocol;    /* IPPROTO_* */
	__u16 _pad0;
};
_Static_assert(sizeof(struct tapio_flow) == 40, "tapio_flow layout");

/*
 * Who a socket belongs to: the process that created it (packet path, probes/include/skb.bpf.h),
 * remembered in process context for the packets that arrive in softirq.
 */
struct tapio_owner {
	__u64 cgroup_id;
	__u32 pid;
	__u32 tgid;
	__u32 uid;
	__u32 _pad0;
	char comm[16];
};
_Static_assert(sizeof(struct tapio_owner) == 40, "tapio_owner layout");

#endif /* __TAPIO_SOCK_H__ */
