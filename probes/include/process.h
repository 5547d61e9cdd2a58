/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* The process monitor's records: exec, fork and exit, told apart by hdr.kind. */
#ifndef __TAPIO_PROCESS_H__
#define __TAPIO_PROCESS_H__

#include "common.h"

#define PROCESS_FILENAME_LEN 256
/* Bytes of the argv block (NUL-separated strings) copied per exec; a power of two. */
#define PROCESS_ARGS_LEN 1024

enum process_kind {
	PROCESS_EXEC = 1,
	PROCESS_FORK = 2,
	PROCESS_EXIT = 3,
};

/* Flags in process_event.flags. */
#define PROCESS_F_ARGS_TRUNCATED 0x1     /* argv block longer than PROCESS_ARGS_LEN */
#define PROCESS_F_FILENAME_TRUNCATED 0x2 /* filename did not fit */

struct process_event {
	struct tapio_header hdr;
	__u32 ppid;       /* real_parent->tgid: the parent process, never a thread id */
	__u32 child_tgid; /* fork: the new process */
	__u32 pid_ns;     /* inode number of the task's pid namespace */
	__u32 exit_code;  /* exit: the raw wait status (code << 8 | signal) */
	__u64 duration_ns; /* exit: time since the process started */
	__u32 args_size;  /* exec: bytes valid in args */
	__u32 flags;      /* PROCESS_F_* */
};
_Static_assert(sizeof(struct process_event) == 80, "process_event layout");

/*
 * Fork and exit send a process_event; exec sends this, which starts with one, cut after the
 * base.args_size bytes of args that are valid (PROCESS_EXEC_ARGS_OFFSET + args_size bytes).
 */
struct process_exec_event {
	struct process_event base;
	char filename[PROCESS_FILENAME_LEN];
	char args[PROCESS_ARGS_LEN]; /* argv strings, each NUL-terminated, args_size bytes valid */
};
_Static_assert(sizeof(struct process_exec_event) == 80 + PROCESS_FILENAME_LEN + PROCESS_ARGS_LEN,
	       "process_exec_event layout");
#define PROCESS_EXEC_ARGS_OFFSET (80 + PROCESS_FILENAME_LEN)
_Static_assert(__builtin_offsetof(struct process_exec_event, args) == PROCESS_EXEC_ARGS_OFFSET,
	       "process_exec_event args offset");

#endif /* __TAPIO_PROCESS_H__ */
