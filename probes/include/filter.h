/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Source filters (issue 17 item 3): the keys the kernel knows about the current task (uid, comm,
 * cgroup id) are filtered here, before a monitor reads anything else. The loader fills the maps
 * of filter.bpf.h before any program is attached, and updates them in place on reload. Mirrored by
 * loader/crates/runtime/src/filter.rs.
 */
#ifndef __TAPIO_FILTER_H__
#define __TAPIO_FILTER_H__

/* Bits of tapio_filter_config.flags: which key is filtered, and how. */
#define TAPIO_FILTER_UID 0x1            /* look the task's uid up in tapio_filter_uid */
#define TAPIO_FILTER_COMM 0x2           /* look its comm up in tapio_filter_comm */
#define TAPIO_FILTER_CGROUP 0x4         /* look its cgroup v2 id up in tapio_filter_cgroup */
#define TAPIO_FILTER_UID_INCLUDE 0x10   /* a uid absent from the map is dropped (else: present) */
#define TAPIO_FILTER_COMM_INCLUDE 0x20  /* a comm absent from the map is dropped */
#define TAPIO_FILTER_CGROUP_INCLUDE 0x40 /* a cgroup absent from the map is dropped */

/* Slot 0 of the tapio_filter_config array: a map value, so a reload can turn filters on and off. */
struct tapio_filter_config {
	__u32 flags; /* TAPIO_FILTER_* */
	__u32 _pad0;
};
_Static_assert(sizeof(struct tapio_filter_config) == 8, "tapio_filter_config layout");

/* Entries of each key set; the loader refuses a configuration with more. */
#define TAPIO_FILTER_UID_MAX 256
#define TAPIO_FILTER_COMM_MAX 256
#define TAPIO_FILTER_CGROUP_MAX 16384

#endif /* __TAPIO_FILTER_H__ */
