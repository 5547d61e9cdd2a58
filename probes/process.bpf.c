// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * process: exec, fork and exit with true parent lineage.
 *
 * Attaches only to sched tracepoints (stable since 2.6/3.x, raw tracepoints since 4.17), so it
 * runs on kernels with neither kprobes nor fentry. No loops and no global data: the same object
 * passes a 4.19 verifier.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "process.h"
#include "transport.bpf.h"

/* The exec record is too large for the 512-byte stack: build it in a per-CPU slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct process_exec_event);
} process_scratch SEC(".maps");

/* The inode of the pid namespace the task lives in (not the one its children get). */
static __always_inline __u32 task_pid_ns(struct task_struct *task)
{
	struct pid *pid = BPF_CORE_READ(task, thread_pid);
	unsigned int level;
	struct upid upid;

	if (!pid)
		return 0;
	level = BPF_CORE_READ(pid, level);
	if (bpf_core_read(&upid, sizeof(upid), &pid->numbers[level & 31]))
		return 0;
	return BPF_CORE_READ(upid.ns, ns.inum);
}

static __always_inline void read_args(struct process_exec_event *e, struct task_struct *task)
{
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long start, end, len;

	e->base.args_size = 0;
	if (!mm)
		return;
	start = BPF_CORE_READ(mm, arg_start);
	end = BPF_CORE_READ(mm, arg_end);
	if (end <= start)
		return;
	len = end - start;
	if (len > PROCESS_ARGS_LEN) {
		e->base.flags |= PROCESS_F_ARGS_TRUNCATED;
		len = PROCESS_ARGS_LEN;
	}
	TAPIO_BOUND_SIZE(len, PROCESS_ARGS_LEN);
	if (bpf_probe_read_user(e->args, len, (void *)start) == 0)
		e->base.args_size = len;
}

SEC("tracepoint/sched/sched_process_exec")
int process_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct process_exec_event *e;
	__u32 zero = 0;
	unsigned int off;
	__u64 size;
	long n;

	e = bpf_map_lookup_elem(&process_scratch, &zero);
	if (!e)
		return 0;
	tapio_fill_header(&e->base.hdr, TAPIO_MONITOR_PROCESS, PROCESS_EXEC);
	e->base.ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->base.child_tgid = 0;
	e->base.pid_ns = task_pid_ns(task);
	e->base.exit_code = 0;
	e->base.duration_ns = 0;
	e->base.flags = 0;

	off = ctx->__data_loc_filename & 0xFFFF;
	n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), (void *)ctx + off);
	if (n == sizeof(e->filename))
		e->base.flags |= PROCESS_F_FILENAME_TRUNCATED;
	read_args(e, task);
	/*
	 * Sent cut after the argv bytes read: copying the record into the ring is a third of what
	 * an exec costs here when all 1360 bytes go (6.18). The decoder takes the size from
	 * args_size. The size is re-bounded right at the call for the verifier (see
	 * TAPIO_BOUND_SIZE); args_size 0 sends the argv area's first byte too.
	 */
	size = e->base.args_size;
	if (size == 0)
		size = 1;
	TAPIO_BOUND_SIZE(size, PROCESS_ARGS_LEN);
	tapio_emit(ctx, e, PROCESS_EXEC_ARGS_OFFSET + size);
	return 0;
}

/* Raw tracepoint: its arguments give the child task itself, so threads can be told apart. */
SEC("raw_tracepoint/sched_process_fork")
int process_fork(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *child = (struct task_struct *)ctx->args[1];
	struct process_event e = {};
	__u32 child_tgid;

	if (!child)
		return 0;
	child_tgid = BPF_CORE_READ(child, tgid);
	tapio_fill_header(&e.hdr, TAPIO_MONITOR_PROCESS, PROCESS_FORK);
	/* A new thread shares its creator's tgid: that is not a fork of a process. */
	if (child_tgid == e.hdr.tgid)
		return 0;
	e.child_tgid = child_tgid;
	/* CLONE_PARENT makes the child a sibling: ask the child who its parent is. */
	e.ppid = BPF_CORE_READ(child, real_parent, tgid);
	e.pid_ns = task_pid_ns(child);
	tapio_emit(ctx, &e, sizeof(e));
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int process_exit(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct process_event e = {};

	/* One record per process: only the last thread out reports, once signal->live hits 0. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	tapio_fill_header(&e.hdr, TAPIO_MONITOR_PROCESS, PROCESS_EXIT);
	e.ppid = BPF_CORE_READ(task, real_parent, tgid);
	e.pid_ns = task_pid_ns(task);
	e.exit_code = BPF_CORE_READ(task, exit_code);
	e.duration_ns = e.hdr.ts_ns - BPF_CORE_READ(task, start_time);
	tapio_emit(ctx, &e, sizeof(e));
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
