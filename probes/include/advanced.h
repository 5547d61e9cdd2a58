/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The advanced monitor's records and maps' value types: per-CPU batches of syscall-entry events.
 *
 * One ring record (struct advanced_batch) carries `count` events; user space expands it into
 * `count` output events. The kernel-side shapes are fixed-width with explicit padding, mirrored by
 * loader/crates/abi/src/advanced.rs (records) and loader/crates/runtime/src/monitors/advanced.rs (config), checked against BTF by
 * loader/crates/abi/tests/layout.rs and loader/tests/layout.rs.
 */
#ifndef __TAPIO_ADVANCED_H__
#define __TAPIO_ADVANCED_H__

#include "common.h"

/* Most events one batch record holds; the loader clamps batch_size to it. A power of two. */
#define ADVANCED_BATCH_MAX 64
/* Event types are syscall numbers below this (x86-64 and arm64 stay under 512). Power of two. */
#define ADVANCED_MAX_TYPES 1024
/* Most syscall numbers the pre-filter holds. */
#define ADVANCED_FILTER_MAX 256

enum advanced_kind {
	ADVANCED_BATCH = 1, /* tapio_header.kind of a batch record */
};

/* advanced_config[0], written by the loader before attach and again on SIGHUP. */
struct advanced_config {
	__u64 dedup_window_ns; /* identical events within this window are suppressed; 0: off */
	__u64 flush_ns;        /* a batch whose oldest event is older than this is flushed */
	__u32 batch_size;      /* events per record, 1..ADVANCED_BATCH_MAX (0 is read as 1) */
	__u32 target_tgid;     /* only this process; 0: every process */
	__u32 ignore_tgid;     /* never this process (the loader itself, whose writes would loop) */
	__u32 use_filter;      /* 1: consult the pre-filter; 0: every syscall passes it */
};
_Static_assert(sizeof(struct advanced_config) == 32, "advanced_config layout");

/* Indexes of advanced_stats (per CPU). seen = sent + sampled + deduped + dropped + buffered. */
enum advanced_stat {
	ADVANCED_STAT_SEEN = 0,      /* passed the tgid checks and the pre-filter */
	ADVANCED_STAT_SENT = 1,      /* events inside records the ring accepted */
	ADVANCED_STAT_SAMPLED = 2,   /* dropped by the type's sampling rate */
	ADVANCED_STAT_DEDUPED = 3,   /* suppressed by the dedup window */
	ADVANCED_STAT_DROPPED = 4,   /* events inside records the ring refused (full) */
	ADVANCED_STAT_FILTERED = 5,  /* rejected by the pre-filter (not part of `seen`) */
	ADVANCED_STAT_RECORDS = 6,   /* batch records the ring accepted */
	ADVANCED_STAT_TIMED = 7,     /* records flushed by the time bound rather than by size */
	ADVANCED_STAT_MAX = 8,
};

/* The dedup identity: the same thread entering the same syscall with the same first argument. */
struct advanced_dedup_key {
	__u64 arg0;
	__u32 pid;
	__u32 nr;
};
_Static_assert(sizeof(struct advanced_dedup_key) == 16, "advanced_dedup_key layout");

struct advanced_dedup_value {
	__u64 window_start_ns; /* when the last event of this identity was kept */
	__u32 suppressed;      /* identical events dropped since then */
	__u32 _pad0;
};
_Static_assert(sizeof(struct advanced_dedup_value) == 16, "advanced_dedup_value layout");

/* One event inside a batch: the header fields the output contract needs, plus the syscall. */
struct advanced_entry {
	__u64 ts_ns;
	__u32 pid;
	__u32 tgid;
	__u64 cgroup_id;
	__u32 uid;
	__u32 nr;         /* syscall number: the event type */
	__u64 arg0;       /* the syscall's first argument */
	__u32 suppressed; /* identical events the dedup window dropped before this one */
	__u16 numa_node;  /* bpf_get_numa_node_id() of the CPU that saw it */
	__u16 cpu;
	char comm[TAPIO_COMM_LEN];
};
_Static_assert(sizeof(struct advanced_entry) == 64, "advanced_entry layout");

/* The record: a header (who flushed, when), then `count` valid entries. Sent truncated to count. */
struct advanced_batch {
	struct tapio_header hdr;
	__u32 count;
	__u32 cpu;
	__u64 first_ts_ns; /* ts of events[0]: the age the time bound is checked against */
	struct advanced_entry events[ADVANCED_BATCH_MAX];
};
#define ADVANCED_BATCH_HDR_SIZE 64
_Static_assert(sizeof(struct advanced_batch) == ADVANCED_BATCH_HDR_SIZE + 64 * ADVANCED_BATCH_MAX,
	       "advanced_batch layout");

#endif /* __TAPIO_ADVANCED_H__ */
