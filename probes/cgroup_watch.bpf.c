// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * cgroup_watch: the id and path of every cgroup made in the v2 (default) hierarchy.
 *
 * The tracepoint cgroup/cgroup_mkdir (4.13) fires in the task doing the mkdir, before any task can
 * be moved into the new cgroup, so its record is in the ring before any record of a task inside:
 * a container that lives 50 ms is attributed all the same. On a v1 hybrid host the tracepoint also
 * fires for every v1 hierarchy; only the default hierarchy (hierarchy id 0, the `0::` line of
 * /proc/<pid>/cgroup) gives the ids bpf_get_current_cgroup_id() returns, so the others are
 * dropped first, before anything is read or reserved.
 *
 * The event's `id` is the cgroup's kernfs id (what bpf_get_current_cgroup_id() returns) since
 * 5.5; before, it was a different number (a 32-bit cgroup id): those kernels emit nothing here
 * and rely on the loader's scan at start. No loops and no global data.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "cgroup_watch.h"
#include "transport.bpf.h"

/* The tracepoint's record (include/trace/events/cgroup.h, DECLARE_EVENT_CLASS(cgroup)). */
struct trace_event_raw_cgroup___tapio {
	int root;
	int level;
	__u64 id;
	__u32 __data_loc_path;
} __attribute__((preserve_access_index));

/* The record is larger than the 512-byte stack: built in a per-CPU slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgroup_watch_event);
} cgroup_watch_scratch SEC(".maps");

static __always_inline int handle_mkdir(struct trace_event_raw_cgroup___tapio *ctx)
{
	struct cgroup_watch_event *e;
	__u32 zero = 0, off;
	long n;

	/* Filter first: v1 hierarchies, and kernels whose id is not the kernfs id (before 5.5). */
	if (ctx->root != 0)
		return 0;
	if (bpf_core_field_size(ctx->id) != sizeof(__u64))
		return 0;
	e = bpf_map_lookup_elem(&cgroup_watch_scratch, &zero);
	if (!e)
		return 0;
	tapio_fill_header(&e->hdr, TAPIO_MONITOR_CGROUP_WATCH, CGROUP_WATCH_MKDIR);
	e->cgroup_id = ctx->id;
	e->level = ctx->level;
	e->flags = 0;
	off = ctx->__data_loc_path & 0xFFFF;
	n = bpf_probe_read_kernel_str(e->path, sizeof(e->path), (void *)ctx + off);
	if (n < 0)
		return 0;
	if (n == sizeof(e->path))
		e->flags |= CGROUP_WATCH_F_PATH_TRUNCATED;
	tapio_emit(ctx, e, sizeof(*e));
	return 0;
}

SEC("tracepoint/cgroup/cgroup_mkdir")
int cgroup_watch_mkdir(void *ctx)
{
	return handle_mkdir(ctx);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
