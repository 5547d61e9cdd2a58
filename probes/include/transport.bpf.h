/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The event transport and the statistics map, included once by each .bpf.c after the libbpf
 * headers. Kept apart from common.h because it defines maps, which only a .bpf.c may do.
 */
#ifndef __TAPIO_TRANSPORT_BPF_H__
#define __TAPIO_TRANSPORT_BPF_H__

#ifdef TAPIO_PERF
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");
#else
/* Size set by the loader before load (EbpfLoader::set_max_entries); this is the default. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/*
 * Delivery policy (loader/crates/runtime/src/transport.rs `DeliveryPolicy`), set by the loader before load
 * (EbpfLoader::set_global): the record whose write brings the unread bytes (itself included) to
 * this many wakes the reader (BPF_RB_FORCE_WAKEUP); every other record is submitted with
 * BPF_RB_NO_WAKEUP and the reader's drain timer collects it. 0 (the default, `immediate`) leaves
 * the wake-up to the kernel, which wakes the reader for every record it finds caught up.
 * Global data is fine here: the ring build loads only on 5.8+, and global data is 5.2. The perf
 * build has no knob: its byte watermark is set where user space opens the perf events.
 */
const volatile __u64 tapio_wakeup_bytes = 0;

/* uapi's BPF_RB_* values (include/uapi/linux/bpf.h), not in the committed vmlinux.h. */
#define TAPIO_RB_NO_WAKEUP 1
#define TAPIO_RB_FORCE_WAKEUP 2
#define TAPIO_RB_AVAIL_DATA 0
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TAPIO_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void tapio_count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &stat);

	if (v)
		*v += 1;
}

/*
 * Sends one record; `size` must be a compile-time constant or bounded right before the call, so
 * the verifier can bound it. Returns the helper's result (0 sent, negative when lost).
 */
static __always_inline long tapio_emit(void *ctx, void *data, __u64 size)
{
	long err;

#ifdef TAPIO_PERF
	err = bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, data, size);
#else
	__u64 flags = 0, avail;

	/*
	 * `batched`: wake the reader only with the record that takes the unread data across the
	 * threshold. Not with every record past it, as the kernel's ringbuf_bench does: while a
	 * reader is behind, that would put a wake-up (about 4 us) on every record, exactly when the
	 * producer can least afford it. A wake-up missed to a race between CPUs is made up by the
	 * reader's drain timer.
	 */
	if (tapio_wakeup_bytes) {
		avail = bpf_ringbuf_query(&events, TAPIO_RB_AVAIL_DATA);
		flags = avail < tapio_wakeup_bytes && avail + size >= tapio_wakeup_bytes ?
				TAPIO_RB_FORCE_WAKEUP : TAPIO_RB_NO_WAKEUP;
	}
	err = bpf_ringbuf_output(&events, data, size, flags);
#endif
	tapio_count(err ? TAPIO_STAT_LOST : TAPIO_STAT_EMITTED);
	return err;
}

#ifdef TAPIO_PERF
/*
 * perf build, skb programs only: sends `size` bytes of `data` followed by the first `tail` bytes
 * of the packet (from the network header), copied by the kernel straight from the skb
 * (bpf_perf_event_output's BPF_F_CTXLEN_MASK, 4.x). Nothing is staged in a map, so nothing can
 * be overwritten by another program on the same CPU while it is being sent.
 */
static __always_inline long tapio_emit_skb_tail(struct __sk_buff *skb, void *data, __u64 size, __u32 tail)
{
	long err = bpf_perf_event_output(skb, &events, BPF_F_CURRENT_CPU | ((__u64)tail << 32), data, size);

	tapio_count(err ? TAPIO_STAT_LOST : TAPIO_STAT_EMITTED);
	return err;
}
#else
/*
 * ring build: room for one `size`-byte record in the ring itself, written in place and sent with
 * tapio_submit(): a record that never sits in a shared per-CPU slot cannot be overwritten by
 * another program on the same CPU (a preempted one, or a softirq). NULL (counted lost) when the
 * ring is full; `size` must be a constant.
 */
static __always_inline void *tapio_reserve(__u64 size)
{
	void *r = bpf_ringbuf_reserve(&events, size, 0);

	if (!r)
		tapio_count(TAPIO_STAT_LOST);
	return r;
}

/* Sends a tapio_reserve()d record of `size` bytes under the delivery policy, as tapio_emit(). */
static __always_inline void tapio_submit(void *r, __u64 size)
{
	__u64 flags = 0;

	if (tapio_wakeup_bytes)
		flags = bpf_ringbuf_query(&events, TAPIO_RB_AVAIL_DATA) + size >= tapio_wakeup_bytes ?
				TAPIO_RB_FORCE_WAKEUP : TAPIO_RB_NO_WAKEUP;
	bpf_ringbuf_submit(r, flags);
	tapio_count(TAPIO_STAT_EMITTED);
}
#endif

static __always_inline void tapio_fill_header(struct tapio_header *h, __u8 monitor, __u8 kind)
{
	__u64 id = bpf_get_current_pid_tgid();

	h->ts_ns = bpf_ktime_get_ns();
	h->pid = (__u32)id;
	h->tgid = id >> 32;
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->uid = (__u32)bpf_get_current_uid_gid();
	h->monitor = monitor;
	h->kind = kind;
	h->_pad0 = 0;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

/*
 * Re-bounds a copy size to [1, max] (max a power of two) right where it is used.
 *
 * Written in asm for two reasons: clang drops a C mask it can prove redundant, and a size spilled
 * to the stack under register pressure comes back unbounded on verifiers before 5.16 ("R2 min
 * value is negative"). The asm runs on the register the helper call then takes. `size` must
 * already be at least 1.
 */
#define TAPIO_BOUND_SIZE(size, max)                                                                \
	asm volatile("%0 += -1\n\t%0 &= %1\n\t%0 += 1" : "+r"(size) : "i"((max) - 1))

#endif /* __TAPIO_TRANSPORT_BPF_H__ */
