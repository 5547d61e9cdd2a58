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

/* sock_cgroup_data's low bits before 5.15 (include/linux/cgroup-defs.h): is_data, no_refcnt. */
#define TAPIO_SKCD_FLAG_BITS 0x3

/*
 * The cgroup v2 id the socket was charged to when it was created (sk_cgrp_data). Unlike
 * bpf_get_current_cgroup_id() it is right in softirq, where most state changes run.
 *
 * Since 5.15 sk_cgrp_data.cgroup is a plain pointer. Before, sk_cgrp_data.val is the pointer
 * itself unless one of its low bits is set: is_data (net_prio or net_cls took the word over, and
 * the kernel from then on attributes every socket to the root cgroup) or no_refcnt (cgroup socket
 * matching was disabled). The kernel's own sock_cgroup_ptr() reads it the same way.
 *
 * Returns 0 when the socket has no cgroup of its own to report: those flagged words, an empty
 * one, or a kernel with neither layout.
 */
static __always_inline __u64 tapio_sock_cgroup_id(struct sock *sk)
{
	struct cgroup *cg;

	if (bpf_core_field_exists(struct sock_cgroup_data, cgroup)) {
		cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	} else if (bpf_core_field_exists(struct sock_cgroup_data___old, val)) {
		__u64 v = BPF_CORE_READ((struct sock___old *)sk, sk_cgrp_data.val);

		if (v & TAPIO_SKCD_FLAG_BITS)
			return 0;
		cg = (struct cgroup *)v;
	} else {
		return 0;
	}
	if (!cg)
		return 0;
	return BPF_CORE_READ(cg, kn, id);
}

#endif /* __TAPIO_SOCK_BPF_H__ */
