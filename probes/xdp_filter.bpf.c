// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * xdp_filter: drops IPv4/IPv6 packets whose source or destination falls in a prefix blocklist,
 * counts every verdict per CPU, and can steer the packets it passes to other CPUs through a CPU
 * map defined here.
 *
 * Kernel floor: XDP 4.8, LPM trie 4.11, generic XDP 4.12, bpf_redirect_map 4.14, CPUMAP 4.15.
 * No loops (VLAN tags are unrolled), no global data (the knobs live in a config ARRAY map the
 * loader writes), no events map: the loader reads the counters and prints periodic `stats`
 * records, so this object stays out of the ring/perf transport scheme and both of its builds
 * (with and without -DTAPIO_PERF) are the same program.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "xdp_filter.h"

/* Blocklists. BPF_F_NO_PREALLOC: the kernel requires it of LPM tries. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, XDP_FILTER_MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct xdp_filter_v4_key);
	__type(value, __u32);
} xdpf_block_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, XDP_FILTER_MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct xdp_filter_v6_key);
	__type(value, __u32);
} xdpf_block_v6 SEC(".maps");

/* Per-CPU so the hot path never shares a cache line; the loader sums over CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDP_FILTER_VERDICT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} xdpf_verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdp_filter_config);
} xdpf_config SEC(".maps");

/* Mirror of the CPU map's filled entries, in slot order (see struct xdp_filter_cpu_slot). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDP_FILTER_MAX_CPUS);
	__type(key, __u32);
	__type(value, struct xdp_filter_cpu_slot);
} xdpf_cpu_slots SEC(".maps");

/* Steering targets: index = CPU id, value = queue size (the loader fills the CPUs it steers to). */
struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__uint(max_entries, XDP_FILTER_MAX_CPUS);
	__type(key, __u32);
	__type(value, __u32);
} xdpf_cpumap SEC(".maps");

static __always_inline int verdict(__u32 which, int action)
{
	__u64 *count = bpf_map_lookup_elem(&xdpf_verdicts, &which);

	if (count)
		*count += 1;
	return action;
}

static __always_inline int blocked_v4(const struct xdp_filter_ipv4 *ip, __u32 match)
{
	struct xdp_filter_v4_key key;

	/* Fields assigned one by one: an initializer may become a .rodata copy (global data). */
	key.prefixlen = 32;
	if (match & XDP_FILTER_MATCH_SRC) {
		__builtin_memcpy(key.addr, &ip->saddr, sizeof(key.addr));
		if (bpf_map_lookup_elem(&xdpf_block_v4, &key))
			return 1;
	}
	if (match & XDP_FILTER_MATCH_DST) {
		__builtin_memcpy(key.addr, &ip->daddr, sizeof(key.addr));
		if (bpf_map_lookup_elem(&xdpf_block_v4, &key))
			return 1;
	}
	return 0;
}

static __always_inline int blocked_v6(const struct xdp_filter_ipv6 *ip, __u32 match)
{
	struct xdp_filter_v6_key key;

	key.prefixlen = 128;
	if (match & XDP_FILTER_MATCH_SRC) {
		__builtin_memcpy(key.addr, ip->saddr, sizeof(key.addr));
		if (bpf_map_lookup_elem(&xdpf_block_v6, &key))
			return 1;
	}
	if (match & XDP_FILTER_MATCH_DST) {
		__builtin_memcpy(key.addr, ip->daddr, sizeof(key.addr));
		if (bpf_map_lookup_elem(&xdpf_block_v6, &key))
			return 1;
	}
	return 0;
}

/*
 * Sends a passed packet to the CPU its flow hash picks. The slot is checked in the mirror array
 * first: before 5.6 a redirect to an empty CPU-map entry still returns XDP_REDIRECT and the
 * packet is then lost in xdp_do_redirect. Flags stay 0 because kernels before 5.6 answer any
 * other flags with XDP_ABORTED; a refused redirect (the entry deleted since the check) is passed
 * here and counted as aborted.
 */
static __always_inline int steer(const struct xdp_filter_config *cfg, __u32 hash)
{
	struct xdp_filter_cpu_slot *slot;
	__u32 nslots = cfg->nslots;
	__u32 index;

	if (nslots == 0 || nslots > XDP_FILTER_MAX_CPUS)
		return verdict(XDP_FILTER_ABORTED, XDP_PASS);
	/*
	 * Fibonacci hashing spreads every address bit into the high bits, then the high 32 bits of
	 * hash * nslots pick a slot in [0, nslots): no division, and flows that differ only in the
	 * last address byte (the byte a plain xor-fold leaves in the high half) still spread.
	 */
	hash *= 0x9E3779B1u;
	index = ((__u64)hash * nslots) >> 32;
	slot = bpf_map_lookup_elem(&xdpf_cpu_slots, &index);
	if (!slot || !slot->valid)
		return verdict(XDP_FILTER_ABORTED, XDP_PASS);
	if (bpf_redirect_map(&xdpf_cpumap, slot->cpu, 0) != XDP_REDIRECT)
		return verdict(XDP_FILTER_ABORTED, XDP_PASS);
	return verdict(XDP_FILTER_REDIRECT, XDP_REDIRECT);
}

SEC("xdp")
int xdp_filter(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct xdp_filter_eth *eth = data;
	struct xdp_filter_config *cfg;
	struct xdp_filter_vlan *vlan;
	__u32 zero = 0, hash;
	__be16 proto;
	void *l3;

	if ((void *)(eth + 1) > data_end)
		return verdict(XDP_FILTER_MALFORMED, XDP_PASS);
	proto = eth->proto;
	l3 = eth + 1;
	/* Up to two VLAN tags (802.1ad outer, 802.1Q inner), written out twice: no loops on 4.19. */
	if (proto == bpf_htons(XDP_FILTER_ETH_P_8021Q) || proto == bpf_htons(XDP_FILTER_ETH_P_8021AD)) {
		vlan = l3;
		if ((void *)(vlan + 1) > data_end)
			return verdict(XDP_FILTER_MALFORMED, XDP_PASS);
		proto = vlan->proto;
		l3 = vlan + 1;
	}
	if (proto == bpf_htons(XDP_FILTER_ETH_P_8021Q) || proto == bpf_htons(XDP_FILTER_ETH_P_8021AD)) {
		vlan = l3;
		if ((void *)(vlan + 1) > data_end)
			return verdict(XDP_FILTER_MALFORMED, XDP_PASS);
		proto = vlan->proto;
		l3 = vlan + 1;
	}

	cfg = bpf_map_lookup_elem(&xdpf_config, &zero);
	if (!cfg)
		return verdict(XDP_FILTER_PASS, XDP_PASS);

	if (proto == bpf_htons(XDP_FILTER_ETH_P_IP)) {
		struct xdp_filter_ipv4 *ip = l3;

		if ((void *)(ip + 1) > data_end || (ip->ver_ihl >> 4) != 4 || (ip->ver_ihl & 0xf) < 5)
			return verdict(XDP_FILTER_MALFORMED, XDP_PASS);
		if (blocked_v4(ip, cfg->match_mode))
			return verdict(XDP_FILTER_DROP, XDP_DROP);
		hash = ip->saddr ^ ip->daddr;
	} else if (proto == bpf_htons(XDP_FILTER_ETH_P_IPV6)) {
		/* The addresses are in the fixed header: extension headers need no walking. */
		struct xdp_filter_ipv6 *ip = l3;

		if ((void *)(ip + 1) > data_end || (ip->ver_tc >> 4) != 6)
			return verdict(XDP_FILTER_MALFORMED, XDP_PASS);
		if (blocked_v6(ip, cfg->match_mode))
			return verdict(XDP_FILTER_DROP, XDP_DROP);
		hash = ip->saddr[0] ^ ip->saddr[1] ^ ip->saddr[2] ^ ip->saddr[3] ^ ip->daddr[0] ^
		       ip->daddr[1] ^ ip->daddr[2] ^ ip->daddr[3];
	} else {
		return verdict(XDP_FILTER_PASS, XDP_PASS);
	}

	if (!cfg->steer)
		return verdict(XDP_FILTER_PASS, XDP_PASS);
	return steer(cfg, hash);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
