/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * cgroup_watch: one record per cgroup created in the v2 hierarchy, so the loader learns a new
 * cgroup's id and path before any task in it can run (container attribution, loader/crates/decode/src/attribution).
 */
#ifndef __TAPIO_CGROUP_WATCH_H__
#define __TAPIO_CGROUP_WATCH_H__

#include "common.h"

enum cgroup_watch_kind {
	CGROUP_WATCH_MKDIR = 1,
};

/*
 * The kernel's TRACE_CGROUP_PATH_LEN is 1024; kubelet's deepest path (systemd driver, a pod uid
 * and a 64-hex container id) is about 190 bytes. A longer path is cut and flagged.
 */
#define CGROUP_WATCH_PATH_MAX 512

/* Flags in cgroup_watch_event.flags. */
#define CGROUP_WATCH_F_PATH_TRUNCATED 0x1

/* hdr describes the task that made the directory (runc, systemd, the test). */
struct cgroup_watch_event {
	struct tapio_header hdr;
	__u64 cgroup_id; /* the new cgroup's id: what bpf_get_current_cgroup_id() returns inside it */
	__u32 level;     /* depth below the root (the root is 0) */
	__u32 flags;     /* CGROUP_WATCH_F_* */
	char path[CGROUP_WATCH_PATH_MAX]; /* from the hierarchy's root, "/a/b", NUL-terminated */
};
_Static_assert(sizeof(struct cgroup_watch_event) == 48 + 16 + CGROUP_WATCH_PATH_MAX, "cgroup_watch_event layout");

#endif /* __TAPIO_CGROUP_WATCH_H__ */
