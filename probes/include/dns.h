/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The dns monitor's records: one DNS message seen in a send or receive syscall, told apart by
 * hdr.kind (query or response, from the QR bit). Timeouts are made by the loader's correlator.
 */
#ifndef __TAPIO_DNS_H__
#define __TAPIO_DNS_H__

#include "common.h"
#include "sock.h"

/* Bytes of each message copied into the event; a power of two. The question, the only part the
 * decoder needs beyond the header, almost always fits: a 255-byte name plus 16 bytes. */
#define DNS_MSG_MAX 512
/* The fixed DNS header (RFC 1035 4.1.1). */
#define DNS_HDR_LEN 12

enum dns_kind {
	DNS_QUERY = 1,
	DNS_RESPONSE = 2,
};

/* dns_event.direction: which syscall saw the message, so which end of the flow sent it. */
enum dns_direction {
	DNS_DIR_SEND = 1, /* flow.s* sent it to flow.d* */
	DNS_DIR_RECV = 2, /* flow.d* sent it to flow.s* */
};

/* Flags in dns_event.flags. */
#define DNS_F_NO_SCRATCH 0x1 /* the per-CPU scratch lookup failed: no message bytes, header only */
#define DNS_F_READ_FAILED 0x2 /* the user buffer could not be read: no message bytes */
#define DNS_F_TCP_PREFIX 0x4 /* a TCP length prefix was stripped */
#define DNS_F_RUNT 0x8 /* a UDP message shorter than the 12-byte header: msg_len bytes, no fields */
#define DNS_F_PACKET 0x10 /* read from the packet (cgroup_skb), not from a syscall's buffer */
#define DNS_F_NO_OWNER 0x20 /* packet path: the socket's owner is unknown (it predates the monitor) */
/*
 * packet path, perf build: the record is this dns_event followed by the packet's first
 * tail_off + cap_len bytes from its network header, so the message is at tail_off of them.
 */
#define DNS_F_SKB_TAIL 0x40

/* TCP messages looked at per segment on the packet path (pipelined queries share segments). */
#define DNS_TCP_MSGS_PER_SEGMENT 2

/*
 * Packet path, TCP framing: where the next length prefix of one direction of one connection
 * starts, known from the stream position (the SYN's sequence number + 1), never guessed.
 */
struct dns_tcp_stream_key {
	struct tapio_flow flow; /* as the local socket sees it */
	__u32 direction;        /* enum dns_direction */
};

struct dns_tcp_stream {
	__u32 next_prefix; /* sequence number of the next 2-byte length prefix */
	__u32 body_seq;    /* a prefix sent alone: where its message starts */
	__u32 body_len;    /* and its length (0: none pending) */
	__u32 _pad0;
};

/* Sent alone (the header-only record) when no message bytes could be captured. */
struct dns_event {
	struct tapio_header hdr;
	struct tapio_flow flow; /* s* = this host's socket, d* = the peer; protocol = IPPROTO_UDP/TCP */
	__u16 dns_id;
	__u16 dns_flags;  /* QR, opcode, AA, TC, RD, RA, rcode */
	__u16 qdcount;
	__u16 ancount;
	__u32 msg_len;    /* the real message length: the syscall's return value or the TCP prefix */
	__u32 cap_len;    /* bytes valid in dns_msg_event.msg (0 in a header-only record) */
	__u8 direction;   /* enum dns_direction */
	__u8 _pad0;
	__u16 tail_off;   /* DNS_F_SKB_TAIL: where the message starts in the packet bytes that follow */
	__u32 flags;      /* DNS_F_* */
};
_Static_assert(sizeof(struct dns_event) == 112, "dns_event layout");

struct dns_msg_event {
	struct dns_event base;
	__u8 msg[DNS_MSG_MAX]; /* the message from its header on, cap_len bytes valid */
};
_Static_assert(sizeof(struct dns_msg_event) == 112 + DNS_MSG_MAX, "dns_msg_event layout");

#endif /* __TAPIO_DNS_H__ */
