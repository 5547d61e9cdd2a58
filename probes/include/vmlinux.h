/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Trimmed CO-RE kernel types for the tapio-probes bundle.
 *
 * Why trimmed and committed: the bundle must build byte-for-byte the same on any machine, so it
 * never reads the build machine's /sys/kernel/btf. Every record below carries
 * preserve_access_index, so each field access becomes a CO-RE relocation that the loader resolves
 * against the running kernel's BTF (or an external BTF file). Only the fields the probes read are
 * declared; their order and sizes here do not matter, their names and kinds do.
 */
#ifndef __TAPIO_VMLINUX_H__
#define __TAPIO_VMLINUX_H__

#include <linux/types.h>
#include <linux/bpf.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef int pid_t;
typedef _Bool bool;
enum { false = 0, true = 1 };

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

typedef struct {
	int counter;
} atomic_t;

struct ns_common {
	unsigned int inum;
};

struct pid_namespace {
	struct ns_common ns;
};

struct upid {
	int nr;
	struct pid_namespace *ns;
};

/* Since 4.19 a task's own pid lives in task_struct::thread_pid. */
struct pid {
	unsigned int level;
	struct upid numbers[1];
};

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
};

struct signal_struct {
	atomic_t live;
};

struct task_struct {
	pid_t pid;
	pid_t tgid;
	struct task_struct *real_parent;
	struct task_struct *parent;
	struct task_struct *group_leader;
	char comm[16];
	u64 start_time;
	int exit_code;
	struct mm_struct *mm;
	struct pid *thread_pid;
	struct signal_struct *signal;
};

/* Tracepoint contexts, as the kernel's trace_event_raw_<event> types describe them. */
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

struct trace_event_raw_sched_process_exec {
	struct trace_entry ent;
	u32 __data_loc_filename;
	pid_t pid;
	pid_t old_pid;
	char __data[0];
};

#pragma clang attribute pop

#endif /* __TAPIO_VMLINUX_H__ */
