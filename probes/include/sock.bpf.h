/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * CO-RE reads of a `struct sock` shared by the network and kernel probes. Include after the libbpf
 * headers. Every read goes through BPF_CORE_READ so field offsets come from the running kernel.
 */
#ifndef __TAPIO_SOCK_BPF_H__
#define __TAPIO_SOCK_BPF_H__

#include "sock.h"

/*
 * Fills `f` from the socket. Returns 0 when the family is neither AF_INET nor AF_INET6 (the
 * family is read from the socket, never assumed from the tracepoint or the caller).
 */
static __always_inline int tapio_read_flow(struct tapio_flow *f, struct sock *sk, __u8 protocol)
{
	unsigned short family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family == TAPIO_AF_INET) {
		f->ip_version = 4;
		f->saddr.v4 = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		f->daddr.v4 = BPF_CORE_READ(sk, __sk_common.skc_daddr);
	} else if (family == TAPIO_AF_INET6) {
		f->ip_version = 6;
		BPF_CORE_READ_INTO(&f->saddr.v6, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&f->daddr.v6, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		return 0;
	}
	/*
	 * Not skc_num: on the way to CLOSE the kernel releases the port (skc_num = 0) before the
	 * tracepoint fires; inet_sport keeps it. It is 0 only before the port is bound
	 * (CLOSE -> SYN_SENT runs before inet_hash_connect picks it).
	 */
	f->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	f->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	f->protocol = protocol;
	f->_pad0 = 0;
	return 1;
}

/*
 * The cgroup v2 id the socket was charged to when it was created (sk_cgrp_data, 5.15+ layout).
 * Unlike bpf_get_current_cgroup_id() it is right in softirq, where most state changes run.
 * Returns 0 when the kernel has the older tagged-pointer layout or no socket cgroup data.
 */
static __always_inline __u64 tapio_sock_cgroup_id(struct sock *sk)
{
	struct cgroup *cg;

	if (!bpf_core_field_exists(struct sock_cgroup_data, cgroup))
		return 0;
	cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	if (!cg)
		return 0;
	return BPF_CORE_READ(cg, kn, id);
}

#endif /* __TAPIO_SOCK_BPF_H__ */
