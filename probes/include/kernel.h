/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The kernel monitor's records: per-cgroup socket lifecycle and OOM kills, told apart by hdr.kind.
 *
 * Container attribution is the point of this monitor, so a socket record's hdr.cgroup_id is the
 * cgroup the socket belongs to (sk_cgrp_data) whenever the kernel has it (KERNEL_F_SOCK_CGROUP),
 * not the cgroup of whatever task a softirq interrupted.
 */
#ifndef __TAPIO_KERNEL_H__
#define __TAPIO_KERNEL_H__

#include "common.h"
#include "sock.h"

enum kernel_kind {
	KERNEL_CONNECT = 1, /* TCP SYN_SENT -> ESTABLISHED */
	KERNEL_ACCEPT = 2,  /* TCP SYN_RECV -> ESTABLISHED */
	KERNEL_CLOSE = 3,   /* TCP -> CLOSE from a state that had a connection or a listener */
	KERNEL_OOM_KILL = 4,
};

/* Flags in kernel_sock_event.flags. */
#define KERNEL_F_SOCK_CGROUP 0x1 /* hdr.cgroup_id is the socket's cgroup */

struct kernel_sock_event {
	struct tapio_header hdr;
	struct tapio_flow flow;
	__u8 oldstate; /* enum tapio_tcp_state */
	__u8 newstate;
	__u16 _pad0;
	__u32 flags;   /* KERNEL_F_* */
};
_Static_assert(sizeof(struct kernel_sock_event) == 48 + 40 + 8, "kernel_sock_event layout");

/* Flags in kernel_oom_event.flags. */
#define KERNEL_F_VICTIM_TASK 0x1 /* the tracepoint gave the victim's task: tgid, comm, cgroup valid */
#define KERNEL_F_VICTIM_UID 0x2  /* victim_uid is valid */

/* hdr describes the task that ran into the OOM (the allocating task); victim_* the task killed. */
struct kernel_oom_event {
	struct tapio_header hdr;
	__u64 victim_cgroup_id;
	__u32 victim_pid;
	__u32 victim_tgid;
	__u32 victim_uid;
	__u32 flags; /* KERNEL_F_VICTIM_* */
	char victim_comm[TAPIO_COMM_LEN];
};
_Static_assert(sizeof(struct kernel_oom_event) == 48 + 8 + 16 + TAPIO_COMM_LEN, "kernel_oom_event layout");

#endif /* __TAPIO_KERNEL_H__ */
