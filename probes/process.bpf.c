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
#include "filter.bpf.h"

/* The exec record is too large for the 512-byte stack: build it in a per-CPU slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct process_exec_event);
} process_scratch SEC(".maps");

/* include/linux/sched/signal.h: a group exit (exit_group(), a fatal signal) is in progress. */
#define TAPIO_SIGNAL_GROUP_EXIT 0x4

/* A process, as its exit is reported once: the tgid and the leader's start (a reused tgid is
 * another process). */
struct process_exit_key {
	__u32 tgid;
	__u32 _pad0;
	__u64 start_time;
};

/*
 * Processes whose exit was reported, on kernels whose sched_process_exit lacks group_dead: there
 * the last threads out are found by signal->live == 0, which every thread that decremented it
 * before reaching the tracepoint sees, so threads exiting together would each report the process.
 * The first to insert its process here reports it (the update with BPF_NOEXIST is atomic under
 * the bucket lock). An entry is only needed for the microseconds the threads race; LRU (4.10+)
 * lets old ones go.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct process_exit_key);
	__type(value, __u8);
} process_exited SEC(".maps");

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

	if (tapio_filtered())
		return 0;
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

	/* The parent's uid, comm and cgroup: the child is a copy of them at this point. */
	if (tapio_filtered())
		return 0;
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

/*
 * Whether the exiting thread reports its process: the thread for which the kernel found the
 * group dead, where the tracepoint says so; else the first thread to claim the process once
 * signal->live is 0. Cheap tests first: most exits are of threads that are not the last.
 */
static __always_inline int exit_reports(struct trace_event_raw_sched_process_exit *ctx, struct task_struct *task,
					__u64 *start_time)
{
	struct process_exit_key key = {};
	__u8 one = 1;

	if (bpf_core_field_exists(ctx->group_dead)) {
		if (!ctx->group_dead)
			return 0;
		*start_time = BPF_CORE_READ(task, group_leader, start_time);
		return 1;
	}
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	*start_time = BPF_CORE_READ(task, group_leader, start_time);
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	key.start_time = *start_time;
	return bpf_map_update_elem(&process_exited, &key, &one, BPF_NOEXIST) == 0;
}

SEC("tracepoint/sched/sched_process_exit")
int process_exit(struct trace_event_raw_sched_process_exit *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct process_event e = {};
	__u64 start_time = 0;
	unsigned int flags;

	if (tapio_filtered())
		return 0;
	/* One record per process, timed from the process's start, not the reporting thread's. */
	if (!exit_reports(ctx, task, &start_time))
		return 0;
	tapio_fill_header(&e.hdr, TAPIO_MONITOR_PROCESS, PROCESS_EXIT);
	e.ppid = BPF_CORE_READ(task, real_parent, tgid);
	e.pid_ns = task_pid_ns(task);
	/*
	 * The status wait() returns (wait_task_zombie): the group's code after a group exit, else the
	 * leader's own, whichever thread happens to be the last out.
	 */
	flags = BPF_CORE_READ(task, signal, flags);
	if (flags & TAPIO_SIGNAL_GROUP_EXIT)
		e.exit_code = BPF_CORE_READ(task, signal, group_exit_code);
	else
		e.exit_code = BPF_CORE_READ(task, group_leader, exit_code);
	e.duration_ns = e.hdr.ts_ns - start_time;
	tapio_emit(ctx, &e, sizeof(e));
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
