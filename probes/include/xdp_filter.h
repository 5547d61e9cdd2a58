/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * xdp_filter: the layouts the loader shares with the program (map keys, config, CPU slots,
 * verdict counter indexes) and the wire headers it parses.
 *
 * No event struct: the monitor emits no per-packet records. The loader sums the per-CPU verdict
 * counters and prints periodic `stats` records (the output contract's `xdp` monitor).
 */
#ifndef __TAPIO_XDP_FILTER_H__
#define __TAPIO_XDP_FILTER_H__

#include "common.h"

/*
 * Default sizes; the loader may change them with EbpfLoader::set_max_entries before load
 * (the CPU map is sized to the possible CPUs: the kernel refuses more than NR_CPUS entries).
 */
#define XDP_FILTER_MAX_RULES 4096
#define XDP_FILTER_MAX_CPUS 64

/* Indexes of the per-CPU verdict counters (xdp_filter_verdicts). Each packet counts in exactly one. */
enum xdp_filter_verdict {
	XDP_FILTER_PASS = 0,      /* handed to the stack on this CPU (includes non-IP frames) */
	XDP_FILTER_DROP = 1,      /* an address matched a blocklist */
	XDP_FILTER_REDIRECT = 2,  /* steered to another CPU through the CPU map */
	XDP_FILTER_MALFORMED = 3, /* IP ethertype but a truncated or invalid header: passed, the stack drops it */
	XDP_FILTER_ABORTED = 4,   /* steering chose a slot the loader left unset: passed on this CPU */
	XDP_FILTER_VERDICT_MAX = 5,
};

/* xdp_filter_config.match_mode: which addresses are looked up in the blocklists. */
#define XDP_FILTER_MATCH_SRC 0x1
#define XDP_FILTER_MATCH_DST 0x2

/*
 * The one entry of xdp_filter_config (an ARRAY map, not global data: 4.19 has no .rodata maps).
 * All zero (the state before the loader writes it) matches nothing and steers nothing.
 */
struct xdp_filter_config {
	__u32 match_mode; /* XDP_FILTER_MATCH_* bits */
	__u32 steer;  /* 1: steer passed IP packets to the CPUs of xdp_filter_cpu_slots */
	__u32 nslots; /* how many leading slots of xdp_filter_cpu_slots the loader filled */
	__u32 _pad0;
};
_Static_assert(sizeof(struct xdp_filter_config) == 16, "xdp_filter_config layout");

/*
 * One steering slot: the CPU (a CPU-map index) a flow hash picks. The program cannot look up the
 * CPU map itself (the verifier allows only bpf_redirect_map on a CPUMAP), so the loader mirrors
 * every CPU-map entry it creates here, and `valid` says the CPU-map entry exists.
 */
struct xdp_filter_cpu_slot {
	__u32 cpu;
	__u32 valid;
};
_Static_assert(sizeof(struct xdp_filter_cpu_slot) == 8, "xdp_filter_cpu_slot layout");

/* LPM trie keys: the prefix length in bits, then the address in network byte order. */
struct xdp_filter_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};
_Static_assert(sizeof(struct xdp_filter_v4_key) == 8, "xdp_filter_v4_key layout");

struct xdp_filter_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};
_Static_assert(sizeof(struct xdp_filter_v6_key) == 20, "xdp_filter_v6_key layout");

/*
 * Wire headers, declared here rather than taken from vmlinux.h: they are the packet's fixed
 * format, not kernel types, so they must not carry CO-RE relocations.
 */
#define XDP_FILTER_ETH_P_IP 0x0800
#define XDP_FILTER_ETH_P_IPV6 0x86DD
#define XDP_FILTER_ETH_P_8021Q 0x8100
#define XDP_FILTER_ETH_P_8021AD 0x88A8

struct xdp_filter_eth {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct xdp_filter_vlan {
	__be16 tci;
	__be16 proto; /* the encapsulated ethertype */
};

struct xdp_filter_ipv4 {
	__u8 ver_ihl; /* version (high nibble), header length in 32-bit words (low nibble) */
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__be32 saddr; /* 32-bit fields: one load each, and a 4-byte aligned copy into the trie key */
	__be32 daddr;
};

struct xdp_filter_ipv6 {
	__u8 ver_tc; /* version (high nibble) */
	__u8 tc_flow[3];
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__be32 saddr[4];
	__be32 daddr[4];
};

#endif /* __TAPIO_XDP_FILTER_H__ */
