// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * advanced: the high-volume path. Every syscall entry (sys_enter, the hottest stable tracepoint
 * there is: it fires on every system call of every task) goes through, cheapest first: a
 * pre-filter on the syscall number, the tgid checks, per-type sampling, an LRU dedup cache; what
 * survives is appended to a per-CPU batch that goes out as one ring record of up to N events.
 * Attached as a raw tracepoint (advanced_sys_enter), so a syscall the pre-filter rejects costs
 * only that check; the classic tracepoint (advanced_sys_enter_tp) is the fallback.
 *
 * Flushing: on size (N from advanced_config), and on a time bound checked (a) on every event and
 * (b) by advanced_flush on sched/sched_switch, which runs whenever the CPU changes task and in
 * particular when it goes idle (next pid 0): a quiet CPU switches to idle right after its last
 * event, so its partial batch leaves then. The one case the bound cannot cover is a CPU that
 * neither makes syscalls nor switches task (one task spinning in user space): its batch waits for
 * the next switch. Both programs touch the per-CPU batch with preemption off (raw tracepoints run
 * their programs so; the syscall tracepoints, faultable since 6.13, disable preemption around the
 * BPF call themselves) and neither runs in interrupt context, so they never interleave on one CPU.
 *
 * Pre-filter: built twice from this file. The default object uses an array indexed by syscall
 * number (every kernel; the cheapest membership test there is); the object from
 * advanced_bloom.bpf.c (TAPIO_ADVANCED_BLOOM) uses BPF_MAP_TYPE_BLOOM_FILTER (5.16), kept for
 * comparison only: the loader no longer picks it (see advanced::object).
 *
 * No loops, no global data (knobs live in advanced_config): the object passes a 5.10 verifier.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "advanced.h"
#include "transport.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct advanced_config);
} advanced_config SEC(".maps");

/*
 * Per syscall number, how many of 2^32 events to drop: an event is dropped when a random u32 is
 * below it. 0 (the zeroed default) keeps all, 2^32 drops all.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ADVANCED_MAX_TYPES);
	__type(key, __u32);
	__type(value, __u64);
} advanced_rates SEC(".maps");

#ifdef TAPIO_ADVANCED_BLOOM
/* Membership test without a bucket walk; a false positive lets an unwatched syscall through. */
struct {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__uint(max_entries, ADVANCED_FILTER_MAX);
	__type(value, __u32);
} advanced_filter SEC(".maps");

static __always_inline int advanced_wanted(__u32 nr)
{
	return bpf_map_peek_elem(&advanced_filter, &nr) == 0;
}
#else
/*
 * One byte per syscall number, 1 when watched: the verifier inlines an array lookup into a bounds
 * check and an add, where a hash lookup hashes the key and walks a bucket, and a bloom filter
 * hashes it once per hash function (5 by default; measured at about 60 ns per syscall on 6.18).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ADVANCED_MAX_TYPES);
	__type(key, __u32);
	__type(value, __u8);
} advanced_filter SEC(".maps");

static __always_inline int advanced_wanted(__u32 nr)
{
	__u8 *watched = bpf_map_lookup_elem(&advanced_filter, &nr);

	return watched && *watched;
}
#endif

/* LRU: a flood of distinct identities evicts old ones instead of failing the insert. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct advanced_dedup_key);
	__type(value, struct advanced_dedup_value);
} advanced_dedup SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct advanced_batch);
} advanced_batches SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ADVANCED_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} advanced_stats SEC(".maps");

static __always_inline void advanced_count(__u32 stat, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&advanced_stats, &stat);

	if (v)
		*v += n;
}

/* Sends the batch's `count` entries as one record and empties it. */
static __always_inline void advanced_flush_batch(void *ctx, struct advanced_batch *b, __u32 stat_why)
{
	__u64 n = b->count;
	__u64 size;
	long err;

	if (n == 0)
		return;
	tapio_fill_header(&b->hdr, TAPIO_MONITOR_ADVANCED, ADVANCED_BATCH);
	b->cpu = bpf_get_smp_processor_id();
	n = b->count;
	if (n == 0)
		return;
	TAPIO_BOUND_SIZE(n, ADVANCED_BATCH_MAX);
	size = ADVANCED_BATCH_HDR_SIZE + n * sizeof(struct advanced_entry);
	err = tapio_emit(ctx, b, size);
	b->count = 0;
	if (err) {
		advanced_count(ADVANCED_STAT_DROPPED, n);
		return;
	}
	advanced_count(ADVANCED_STAT_SENT, n);
	advanced_count(ADVANCED_STAT_RECORDS, 1);
	if (stat_why == ADVANCED_STAT_TIMED)
		advanced_count(ADVANCED_STAT_TIMED, 1);
}

/* 1 when the event is a repeat within the window (and counted), 0 when it goes out. */
static __always_inline int advanced_duplicate(const struct advanced_config *cfg, __u32 pid, __u32 nr,
					      __u64 arg0, __u64 now, __u32 *suppressed)
{
	struct advanced_dedup_key key = { .arg0 = arg0, .pid = pid, .nr = nr };
	struct advanced_dedup_value fresh = { .window_start_ns = now };
	struct advanced_dedup_value *v;

	*suppressed = 0;
	if (cfg->dedup_window_ns == 0)
		return 0;
	v = bpf_map_lookup_elem(&advanced_dedup, &key);
	if (!v) {
		bpf_map_update_elem(&advanced_dedup, &key, &fresh, BPF_ANY);
		return 0;
	}
	if (now - v->window_start_ns < cfg->dedup_window_ns) {
		__sync_fetch_and_add(&v->suppressed, 1);
		return 1;
	}
	/* A new window: this event goes out and reports what the last window suppressed. */
	*suppressed = v->suppressed;
	v->suppressed = 0;
	v->window_start_ns = now;
	return 0;
}

static __always_inline int advanced_sampled_out(__u32 nr)
{
	__u32 type = nr & (ADVANCED_MAX_TYPES - 1);
	__u64 *drop_below = bpf_map_lookup_elem(&advanced_rates, &type);

	if (!drop_below || *drop_below == 0)
		return 0;
	return (__u64)bpf_get_prandom_u32() < *drop_below;
}

/*
 * The pre-filter, the first thing either entry program does: a syscall outside the watched set
 * costs the range check, one array lookup the verifier inlines (the knobs) and the set lookup.
 * Returns the knobs when the event goes on, NULL when it stops here.
 */
static __always_inline struct advanced_config *advanced_prefilter(long nr)
{
	struct advanced_config *cfg;
	__u32 zero = 0;

	if (nr < 0 || nr >= ADVANCED_MAX_TYPES)
		return NULL;
	cfg = bpf_map_lookup_elem(&advanced_config, &zero);
	if (!cfg)
		return NULL;
	if (cfg->use_filter && !advanced_wanted((__u32)nr)) {
		advanced_count(ADVANCED_STAT_FILTERED, 1);
		return NULL;
	}
	return cfg;
}

/* A watched syscall: tgid checks, sampling, dedup, then into this CPU's batch. */
static __always_inline int advanced_record(void *ctx, struct advanced_config *cfg, long nr, __u64 arg0)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, pid = (__u32)id, zero = 0, suppressed, i, limit;
	struct advanced_batch *b;
	struct advanced_entry *e;
	__u64 now;

	if (tgid == cfg->ignore_tgid || (cfg->target_tgid && tgid != cfg->target_tgid))
		return 0;
	advanced_count(ADVANCED_STAT_SEEN, 1);
	if (advanced_sampled_out((__u32)nr)) {
		advanced_count(ADVANCED_STAT_SAMPLED, 1);
		return 0;
	}
	now = bpf_ktime_get_ns();
	if (advanced_duplicate(cfg, pid, (__u32)nr, arg0, now, &suppressed)) {
		advanced_count(ADVANCED_STAT_DEDUPED, 1);
		return 0;
	}

	b = bpf_map_lookup_elem(&advanced_batches, &zero);
	if (!b)
		return 0;
	i = b->count;
	if (i >= ADVANCED_BATCH_MAX) /* cannot happen: a full batch is flushed below */
		return 0;
	if (i == 0)
		b->first_ts_ns = now;
	e = &b->events[i];
	e->ts_ns = now;
	e->pid = pid;
	e->tgid = tgid;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->nr = (__u32)nr;
	e->arg0 = arg0;
	e->suppressed = suppressed;
	e->numa_node = (__u16)bpf_get_numa_node_id();
	e->cpu = (__u16)bpf_get_smp_processor_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	b->count = i + 1;

	limit = cfg->batch_size;
	if (limit == 0)
		limit = 1;
	if (i + 1 >= limit)
		advanced_flush_batch(ctx, b, ADVANCED_STAT_SENT);
	else if (now - b->first_ts_ns >= cfg->flush_ns)
		advanced_flush_batch(ctx, b, ADVANCED_STAT_TIMED);
	return 0;
}

/*
 * The event path: the raw tracepoint, TP_PROTO(struct pt_regs *regs, long id). Unlike the classic
 * tracepoint, nothing runs before the program (the classic one first fills a perf trace record
 * with the syscall's six arguments, on every syscall), so a filtered-out syscall costs the
 * pre-filter and the tracepoint call. The first argument is read from the user registers only for
 * a watched syscall, where each architecture's syscall ABI puts it: rdi on x86-64, orig_x0 on
 * arm64 (regs[0] is overwritten by the return value; the kernel's own syscall_get_arguments() in
 * arch/arm64/include/asm/syscall.h reads orig_x0 too, so both paths report the same value).
 * bpf_tracing.h picks the register by the build's __TARGET_ARCH_*.
 */
SEC("raw_tracepoint/sys_enter")
int advanced_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	long nr = (long)ctx->args[1];
	struct advanced_config *cfg = advanced_prefilter(nr);
	struct pt_regs *regs;

	if (!cfg)
		return 0;
	regs = (struct pt_regs *)ctx->args[0];
	return advanced_record(ctx, cfg, nr, PT_REGS_PARM1_CORE_SYSCALL(regs));
}

/* The fallback where raw tracepoints cannot attach: the classic raw_syscalls/sys_enter. */
SEC("tracepoint/raw_syscalls/sys_enter")
int advanced_sys_enter_tp(struct trace_event_raw_sys_enter *ctx)
{
	long nr = ctx->id;
	__u64 arg0 = ctx->args[0];
	struct advanced_config *cfg = advanced_prefilter(nr);

	if (!cfg)
		return 0;
	return advanced_record(ctx, cfg, nr, arg0);
}

/* Flushes this CPU's stale batch on a task switch, and any batch when the CPU goes idle. */
SEC("raw_tracepoint/sched_switch")
int advanced_flush(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *next = (struct task_struct *)ctx->args[2];
	struct advanced_config *cfg;
	struct advanced_batch *b;
	__u32 zero = 0;
	int idle;

	b = bpf_map_lookup_elem(&advanced_batches, &zero);
	if (!b || b->count == 0)
		return 0;
	cfg = bpf_map_lookup_elem(&advanced_config, &zero);
	if (!cfg)
		return 0;
	idle = next && BPF_CORE_READ(next, pid) == 0;
	if (idle || bpf_ktime_get_ns() - b->first_ts_ns >= cfg->flush_ns)
		advanced_flush_batch(ctx, b, ADVANCED_STAT_TIMED);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
