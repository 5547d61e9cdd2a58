/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The source filter every monitor's task-context programs consult first, before any CO-RE read,
 * map update or header fill: `if (tapio_filtered()) return 0;`. Include after transport.bpf.h
 * (it counts its drops in the `stats` slots TAPIO_STAT_FILTER_*).
 *
 * Cost when no filter is configured: in the ring build, one branch on a `const volatile` the
 * loader sets before load (the verifier then drops the rest as dead code). The perf build has no
 * global data (it must load on kernels before 5.2), so there the flags word of a one-slot array
 * is read instead (a lookup the verifier inlines). The flags themselves are always a map value,
 * so a reload turns filters on and off in place; the ring build's `const volatile` cannot change
 * after load, and a filter added by a reload to an object loaded without filters is applied by
 * the agent instead (loader/src/filter.rs).
 *
 * Helpers only (no new program features): bpf_get_current_uid_gid, bpf_get_current_comm (4.2)
 * and bpf_get_current_cgroup_id (4.18), which every monitor using tapio_fill_header calls already.
 */
#ifndef __TAPIO_FILTER_BPF_H__
#define __TAPIO_FILTER_BPF_H__

#include "filter.h"

#ifndef TAPIO_PERF
/* Set by the loader before load (EbpfLoader::set_global) when the configuration filters in the kernel. */
const volatile __u32 tapio_filter_on = 0;
#define TAPIO_FILTER_ON tapio_filter_on
#else
#define TAPIO_FILTER_ON 1
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tapio_filter_config);
} tapio_filter_config SEC(".maps");

/* Value: 1. Presence is what counts (include or exclude per the flags). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TAPIO_FILTER_UID_MAX);
	__type(key, __u32);
	__type(value, __u8);
} tapio_filter_uid SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TAPIO_FILTER_COMM_MAX);
	__type(key, char[TAPIO_COMM_LEN]);
	__type(value, __u8);
} tapio_filter_comm SEC(".maps");

/* Leaf cgroup v2 ids, resolved by the agent from container and pod attribution. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TAPIO_FILTER_CGROUP_MAX);
	__type(key, __u64);
	__type(value, __u8);
} tapio_filter_cgroup SEC(".maps");

/* Whether a key set drops this task: include mode drops what is absent, exclude what is present. */
static __always_inline int tapio_filter_drops(void *hit, __u32 flags, __u32 include)
{
	return (flags & include) ? hit == NULL : hit != NULL;
}

/* 1 when the current task's event must not be produced (and the drop is counted), else 0. */
static __always_inline int tapio_filtered(void)
{
	struct tapio_filter_config *cfg;
	__u32 zero = 0, flags;

	if (!TAPIO_FILTER_ON)
		return 0;
	cfg = bpf_map_lookup_elem(&tapio_filter_config, &zero);
	if (!cfg)
		return 0;
	flags = cfg->flags;
	if (!flags)
		return 0;
	if (flags & TAPIO_FILTER_UID) {
		__u32 uid = (__u32)bpf_get_current_uid_gid();

		if (tapio_filter_drops(bpf_map_lookup_elem(&tapio_filter_uid, &uid), flags, TAPIO_FILTER_UID_INCLUDE)) {
			tapio_count(TAPIO_STAT_FILTER_UID);
			return 1;
		}
	}
	if (flags & TAPIO_FILTER_COMM) {
		char comm[TAPIO_COMM_LEN] = {};

		bpf_get_current_comm(comm, sizeof(comm));
		if (tapio_filter_drops(bpf_map_lookup_elem(&tapio_filter_comm, comm), flags, TAPIO_FILTER_COMM_INCLUDE)) {
			tapio_count(TAPIO_STAT_FILTER_COMM);
			return 1;
		}
	}
	if (flags & TAPIO_FILTER_CGROUP) {
		__u64 id = bpf_get_current_cgroup_id();

		if (tapio_filter_drops(bpf_map_lookup_elem(&tapio_filter_cgroup, &id), flags, TAPIO_FILTER_CGROUP_INCLUDE)) {
			tapio_count(TAPIO_STAT_FILTER_CGROUP);
			return 1;
		}
	}
	return 0;
}

#endif /* __TAPIO_FILTER_BPF_H__ */
