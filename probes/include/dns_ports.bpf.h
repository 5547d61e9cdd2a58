/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The ports that mark DNS traffic, for the dns probe (which parses that traffic) and the network
 * probe (which reports its UDP flows). Each object gets its own `dns_ports` map; the loader fills
 * every object's map of that name from the one `dns_ports` setting (loader/crates/runtime/src/monitors/dns.rs),
 * so the two monitors always agree. A map, not global data: 4.19 has no .rodata maps.
 * Include after the libbpf headers, once per .bpf.c (it defines a map).
 */
#ifndef __TAPIO_DNS_PORTS_BPF_H__
#define __TAPIO_DNS_PORTS_BPF_H__

/* Slots of the dns_ports map (the loader's `dns_ports` takes at most this many); 0 is unused. */
#define DNS_PORTS_MAX 4

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DNS_PORTS_MAX);
	__type(key, __u32);
	__type(value, __u32);
} dns_ports SEC(".maps");

/* Whether `port` (host byte order) is one of the configured DNS ports. Unrolled: no loops on 4.19. */
static __always_inline int tapio_dns_port(__u16 port)
{
	__u32 i, *v;

	if (port == 0)
		return 0;
#pragma unroll
	for (i = 0; i < DNS_PORTS_MAX; i++) {
		__u32 key = i;

		v = bpf_map_lookup_elem(&dns_ports, &key);
		if (v && *v == port)
			return 1;
	}
	return 0;
}

/* Either end on a DNS port: source port 53 marks a response as surely as destination 53 a query. */
static __always_inline int tapio_dns_flow(const struct tapio_flow *f)
{
	return tapio_dns_port(f->sport) || tapio_dns_port(f->dport);
}

/*
 * Whether a receive on the socket of `f` may carry DNS, decided at the syscall's entry: a DNS port
 * on either end, or an unconnected socket (no peer port yet) that will learn its peer at exit
 * from the sockaddr the call fills (`uaddr`, or the msghdr's name at `umsg`).
 */
static __always_inline int tapio_dns_recv_candidate(const struct tapio_flow *f, __u64 uaddr, __u64 umsg)
{
	return tapio_dns_flow(f) || (f->dport == 0 && (uaddr || umsg));
}

#endif /* __TAPIO_DNS_PORTS_BPF_H__ */
