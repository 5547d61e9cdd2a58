/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * What every monitor shares: the event header every record starts with, and the transport.
 *
 * The transport is chosen at compile time because a map's type cannot change after the object is
 * built: each monitor is compiled twice, once with a ring buffer (5.8+) and once with
 * -DTAPIO_PERF for a perf event array (4.4+). Programs call tapio_emit() and never name the map.
 */
#ifndef __TAPIO_COMMON_H__
#define __TAPIO_COMMON_H__

#define TAPIO_COMM_LEN 16

/* Monitor ids in tapio_header.monitor; mirrored by loader/crates/abi/src/lib.rs. */
enum tapio_monitor {
	TAPIO_MONITOR_PROCESS = 1,
	TAPIO_MONITOR_DNS = 2,
	TAPIO_MONITOR_NETWORK = 3,
	TAPIO_MONITOR_KERNEL = 4,
	TAPIO_MONITOR_SECURITY = 5,
	TAPIO_MONITOR_XDP = 6,
	TAPIO_MONITOR_ADVANCED = 7,
	TAPIO_MONITOR_CGROUP_WATCH = 8, /* not a monitor of its own: feeds container attribution */
};

/* The first 48 bytes of every record. Fixed-width fields, explicit padding, no holes. */
struct tapio_header {
	__u64 ts_ns;     /* bpf_ktime_get_ns() */
	__u32 pid;       /* thread id */
	__u32 tgid;      /* process id */
	__u64 cgroup_id; /* cgroup v2 id of the current task */
	__u32 uid;
	__u8 monitor;    /* enum tapio_monitor */
	__u8 kind;       /* per-monitor event kind */
	__u16 _pad0;
	char comm[TAPIO_COMM_LEN];
};
_Static_assert(sizeof(struct tapio_header) == 48, "tapio_header layout");

/* Indexes of the per-CPU statistics array every object carries. */
enum tapio_stat {
	TAPIO_STAT_EMITTED = 0,
	TAPIO_STAT_LOST = 1, /* the ring was full, or the perf output failed */
	/* Events the source filter (filter.bpf.h) dropped, per key; counted by the first key that drops. */
	TAPIO_STAT_FILTER_UID = 2,
	TAPIO_STAT_FILTER_COMM = 3,
	TAPIO_STAT_FILTER_CGROUP = 4,
	TAPIO_STAT_MAX = 5,
};

#endif /* __TAPIO_COMMON_H__ */
