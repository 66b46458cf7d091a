/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Container layer: where each thread's wall time goes.
 *
 * A thread's time is a sequence of segments, each with one cause
 * (enum iso_cause, thread-state causes only). Every scheduler or reclaim
 * event closes the open segment, adds its length to the thread's cumulative
 * cause_ns[] in the `tasks` map, and opens the next one. User space reads the
 * map on a timer (no per-event output), so the hot path costs two hash
 * lookups and a few CO-RE reads. Segments that per-request correlation needs
 * (delays and sleeps of at least stream_min_ns) are also streamed to the
 * ring buffer as ISO_REC_DELAY records, and a thread's final totals as
 * ISO_REC_THREAD_EXIT.
 *
 * Each hook exists twice: tp_btf (preferred) and raw_tp (fallback for
 * kernels without BTF-typed tracepoints); the loader's program table
 * (agent/programs.cpp) switches one of each pair off. Both bodies are the
 * same inline functions; all kernel memory is read with BPF_CORE_READ, which
 * is valid under either attach type.
 */
#define __ISOSCOPE_BPF__ 1
#include "isoscope/kernel_types.h"
#include "isoscope/core_fixes.bpf.h"
#include "isoscope/task.bpf.h"
#include "isoscope/abi.h"
#include "isoscope/maps.bpf.h"
#include "isoscope/record.bpf.h"
#include "isoscope/hook.bpf.h"
#include "isoscope/attribution.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

/* Settings, fixed before load (read-only data). */
const volatile __u32 abi_version = ISO_ABI_VERSION;
const volatile __u32 filter_tgid = 0;        /* 0: every process */
const volatile __u64 stream_min_ns = 1000000; /* stream segments at least this long */
const volatile bool track_kthreads = false;
const volatile bool have_unthrottle_probe = false;

const volatile bool track_steal = true;       /* hypervisor.steal from the CPUs' steal clocks */

ISO_TASKS_MAP;
ISO_EVENTS_MAP;
ISO_STATS_MAP;
ISO_BLK_DONE_MAP;

/* Per CPU: steal while the CPU was idle (the idle task is no `tasks` entry). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct iso_cpu_state);
} cpu_state SEC(".maps");

#include "isoscope/segments.bpf.h"

/* cfs_rq key -> boot ns of its last unthrottle (filled by the optional probes). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} unthrottle_ts SEC(".maps");

static __always_inline __u32 runnable_cause(struct task_struct *t, struct iso_thread_totals *st,
					    bool btf)
{
	__u64 key = 0;

	if (iso_task_throttled(t, &key, btf)) {
		st->throttled_cfs_rq = key;
		return ISO_CAUSE_CONTAINER_CPU_THROTTLE;
	}
	st->throttled_cfs_rq = 0;
	/* A vCPU thread waiting for a CPU: what its guest sees as steal. */
	if (st->flags & ISO_TF_VCPU)
		return ISO_CAUSE_HYPERVISOR_STEAL;
	return ISO_CAUSE_CONTAINER_RUNQUEUE;
}

/*
 * Steal (guest side, docs/hypervisor.md): the hypervisor ran something else
 * on this vCPU while the thread was on it, or while it waited after a
 * wake-up onto the idle vCPU. The CPU's steal clock is read when a segment
 * starts on a CPU (mark) and when it ends there; the advance, at most the
 * segment's length, moves from the segment's cause to hypervisor.steal. A
 * segment that started on another CPU (a wake-up that migrated) is not
 * charged: its steal clock is not this CPU's. Each nanosecond of a CPU's
 * steal goes to one place only (the thread on it, the thread woken onto it
 * while idle, or the idle CPU), so the node's sum is the CPU's steal.
 */
static __always_inline void steal_mark(struct iso_thread_totals *st, __u64 clock, __u32 cpu)
{
	st->steal_mark_ns = clock;
	st->steal_cpu = cpu;
}

/* Charges the open segment's steal; returns it (0: none, or another CPU's clock). */
static __always_inline __u64 steal_take(struct iso_thread_totals *st, __u32 tid, __u64 now,
					__u64 clock, __u32 cpu)
{
	__u32 open = st->seg_cause;
	__u64 d = 0;

	if (st->steal_cpu != cpu || open >= ISO_THREAD_CAUSES)
		goto out; /* another CPU's clock */
	d = iso_steal_in_segment(st->seg_start_ns, now, st->steal_mark_ns, clock);
	if (!d || open == ISO_CAUSE_HYPERVISOR_STEAL)
		goto out; /* none, or already steal (a vCPU thread waiting) */
	/* The stolen part of the segment, placed at its end: set_segment closes
	 * [start, now - d) with the open cause, then [now - d, now) as steal. */
	end_segment(st, tid, now - d, ISO_CAUSE_HYPERVISOR_STEAL);
out:
	st->steal_cpu = ISO_NO_CPU;
	return d;
}

/* Steal while the CPU was idle, less `taken`: the part a thread woken onto
 * this idle CPU waited through (charged to that thread). */
static __always_inline void idle_steal(bool prev_idle, bool next_idle, __u64 clock, __u64 taken)
{
	__u32 zero = 0;
	struct iso_cpu_state *cs = bpf_map_lookup_elem(&cpu_state, &zero);
	__u64 d;

	if (!cs)
		return;
	if (prev_idle && cs->steal_mark_ns && clock > cs->steal_mark_ns) {
		d = clock - cs->steal_mark_ns;
		cs->idle_steal_ns += d > taken ? d - taken : 0;
	}
	cs->steal_mark_ns = next_idle ? clock : 0;
}

static __always_inline void on_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
				      bool btf)
{
	__u64 now = bpf_ktime_get_boot_ns();
	struct iso_thread_totals *st;
	__u64 clock = 0, taken = 0;
	__u32 cpu = ISO_NO_CPU;
	bool have_clock = false;
	bool prev_idle = ISO_RD(btf, prev, pid) == 0;
	bool next_idle = ISO_RD(btf, next, pid) == 0;
	__u32 tid;

	if (track_steal)
		have_clock = iso_steal_clock(prev, btf, &clock, &cpu);

	tid = ISO_RD(btf, prev, pid);
	if (tid) {
		unsigned int state = iso_task_state(prev, btf);

		st = bpf_map_lookup_elem(&tasks, &tid);
		if (!st && !(state & ISO_TASK_DEAD) && wanted(prev, btf))
			st = create_state(prev, tid, now, ISO_CAUSE_APP_ON_CPU);
		if (st) {
			__u32 cause;
			bool runnable = preempt || state == ISO_TASK_RUNNING;

			if (st->flags & ISO_TF_CGROUP_STALE)
				refresh_cgroups(prev, st);
			if (have_clock)
				steal_take(st, tid, now, clock, cpu);
			if (runnable)
				cause = runnable_cause(prev, st, btf);
			else if (st->vcpu_state == ISO_VCPU_VMM)
				cause = ISO_CAUSE_PARAVIRT_VMM_EXIT; /* the VMM handling an exit sleeps */
			else if (btf ? BPF_CORE_READ_BITFIELD(prev, in_iowait)
				     : BPF_CORE_READ_BITFIELD_PROBED(prev, in_iowait))
				cause = ISO_CAUSE_APP_BLOCKED_IO;
			else
				cause = ISO_CAUSE_APP_BLOCKED_OTHER;
			end_segment(st, tid, now, cause);
			if (have_clock && runnable)
				steal_mark(st, clock, cpu);
		}
	}

	tid = ISO_RD(btf, next, pid);
	st = tid ? bpf_map_lookup_elem(&tasks, &tid) : NULL;
	if (!st) {
		if (tid && wanted(next, btf)) {
			st = create_state(next, tid, now, ISO_CAUSE_APP_ON_CPU);
			if (st && have_clock)
				steal_mark(st, clock, cpu);
		}
		if (have_clock)
			idle_steal(prev_idle, next_idle, clock, 0);
		return;
	}
	st->switches++;
	if (have_unthrottle_probe && st->seg_cause == ISO_CAUSE_CONTAINER_CPU_THROTTLE &&
	    st->throttled_cfs_rq) {
		/* Split at the unthrottle: throttled before it, queued for a CPU after. */
		__u64 *u = bpf_map_lookup_elem(&unthrottle_ts, &st->throttled_cfs_rq);

		if (u && *u > st->seg_start_ns && *u < now) {
			end_segment(st, tid, *u, ISO_CAUSE_CONTAINER_RUNQUEUE);
			iso_percpu_inc(&stats, ISO_STAT_THROTTLE_SPLITS);
		}
	}
	/* The wait that ends here: its steal is the thread's only when the CPU
	 * was idle (else the thread that ran meanwhile was charged for it, and
	 * the node's steal would count twice). */
	if (have_clock) {
		if (prev_idle)
			taken = steal_take(st, tid, now, clock, cpu);
		st->steal_cpu = ISO_NO_CPU;
		idle_steal(prev_idle, next_idle, clock, taken);
	}
	end_segment(st, tid, now, oncpu_cause(st));
	if (have_clock)
		steal_mark(st, clock, cpu);
}

/*
 * Block I/O (docs/hypervisor.md, "Block I/O"): the thread slept in I/O wait
 * since seg_start_ns and is being woken (sched_waking, in the completion's
 * context) by the completion of its request, which paravirt.bpf.c left in
 * this CPU's blk_done slots just before. The sleep splits into: held back by
 * blk-throttle (the request entered the block layer from a kernel thread,
 * throttle's dispatcher, after the thread went to sleep) -> io_throttle;
 * in a virtio-blk device (issue -> completion) -> paravirt.virtio_blk; the
 * rest stays app.blocked_io.
 */
static __always_inline void split_block_wait(struct iso_thread_totals *st, __u32 tid, __u64 now)
{
	__u32 zero = 0;
	struct iso_blk_done_cpu *c = bpf_map_lookup_elem(&blk_done, &zero);
	struct iso_blk_done *d = NULL;
	struct iso_blk_parts sp;
	__u32 i;

	if (!c)
		return;
	/* Newest first: a nested completion's wake-up runs before the one it
	 * interrupted. */
	for (i = 1; i <= ISO_BLK_DONE_SLOTS; i++) {
		struct iso_blk_done *cand = &c->slot[(c->next - i) & (ISO_BLK_DONE_SLOTS - 1)];

		if (iso_blk_split(st->seg_start_ns, now, cand, &sp)) {
			d = cand;
			break;
		}
	}
	if (!d)
		return;
	if (sp.throttle_end > st->seg_start_ns) {
		st->seg_cause = ISO_CAUSE_CONTAINER_IO_THROTTLE;
		end_segment(st, tid, sp.throttle_end, ISO_CAUSE_APP_BLOCKED_IO);
	}
	if (sp.device_end > sp.device_start) {
		end_segment(st, tid, sp.device_start, ISO_CAUSE_PARAVIRT_VIRTIO_BLK);
		end_segment(st, tid, sp.device_end, ISO_CAUSE_APP_BLOCKED_IO);
	}
	d->complete_ns = 0;
	iso_percpu_inc(&stats, ISO_STAT_BLK_SPLITS);
}

static __always_inline void on_wakeup(struct task_struct *p, bool btf)
{
	__u32 tid = ISO_RD(btf, p, pid);
	struct iso_thread_totals *st = bpf_map_lookup_elem(&tasks, &tid);
	__u64 now, clock = 0;
	__u32 cpu = ISO_NO_CPU;

	if (!st)
		return;
	if (st->seg_cause == ISO_CAUSE_APP_BLOCKED_IO || st->seg_cause == ISO_CAUSE_APP_BLOCKED_OTHER ||
	    st->seg_cause == ISO_CAUSE_CONTAINER_MEMORY_RECLAIM ||
	    st->seg_cause == ISO_CAUSE_PARAVIRT_VMM_EXIT) {
		now = bpf_ktime_get_boot_ns();
		/* A VMM that slept while handling an exit stays in vmm_exit until its
		 * next KVM_RUN; any other sleep ends here. */
		if (st->seg_cause != ISO_CAUSE_PARAVIRT_VMM_EXIT)
			end_segment(st, tid, now, runnable_cause(p, st, btf));
		if (track_steal && iso_steal_clock(p, btf, &clock, &cpu))
			steal_mark(st, clock, cpu);
	}
}

/*
 * sched_waking runs in the waker's context, before the wake-up may be
 * handed to the wakee's CPU (sched_wakeup then fires there, in an IPI): the
 * completion that wakes an I/O waiter is still this CPU's newest, so the
 * block split happens here; sched_wakeup then ends the (rest of the) sleep.
 */
static __always_inline void on_waking(struct task_struct *p, bool btf)
{
	__u32 tid = ISO_RD(btf, p, pid);
	struct iso_thread_totals *st = bpf_map_lookup_elem(&tasks, &tid);

	if (st && st->seg_cause == ISO_CAUSE_APP_BLOCKED_IO)
		split_block_wait(st, tid, bpf_ktime_get_boot_ns());
}

static __always_inline void on_wakeup_new(struct task_struct *p, bool btf)
{
	__u32 tid = ISO_RD(btf, p, pid);
	struct iso_thread_totals *st;

	if (!wanted(p, btf))
		return;
	st = create_state(p, tid, bpf_ktime_get_boot_ns(), ISO_CAUSE_CONTAINER_RUNQUEUE);
	if (st) {
		__u64 clock = 0;
		__u32 cpu = ISO_NO_CPU;

		st->seg_cause = runnable_cause(p, st, btf);
		if (track_steal && iso_steal_clock(p, btf, &clock, &cpu))
			steal_mark(st, clock, cpu);
	}
}

static __always_inline void on_exit(struct task_struct *p)
{
	__u32 tid = BPF_CORE_READ(p, pid);
	struct iso_thread_totals *st = bpf_map_lookup_elem(&tasks, &tid);
	struct iso_rec_thread_totals *rec;
	__u64 now;

	if (!st)
		return;
	now = bpf_ktime_get_boot_ns();
	set_segment(st, now, oncpu_cause(st));
	rec = iso_reserve(&events, &stats, sizeof(*rec));
	if (rec) {
		iso_fill_hdr(&rec->hdr, ISO_REC_THREAD_EXIT, sizeof(*rec), st->tgid, tid, now,
			     st->cgroup_v2_id, st->cgroup_v1_cpu_id);
		__builtin_memcpy(&rec->t, st, sizeof(rec->t));
		bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
	}
	bpf_map_delete_elem(&tasks, &tid);
}

static __always_inline void on_cgroup_attach(struct task_struct *t)
{
	__u32 tid = BPF_CORE_READ(t, pid);
	struct iso_thread_totals *st = bpf_map_lookup_elem(&tasks, &tid);

	if (st)
		st->flags |= ISO_TF_CGROUP_STALE;
}

static __always_inline void on_reclaim_begin(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct iso_thread_totals *st = bpf_map_lookup_elem(&tasks, &tid);

	if (!st)
		return;
	if (st->reclaim_depth++ == 0)
		set_segment(st, bpf_ktime_get_boot_ns(), ISO_CAUSE_CONTAINER_MEMORY_RECLAIM);
}

static __always_inline void on_reclaim_end(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct iso_thread_totals *st = bpf_map_lookup_elem(&tasks, &tid);

	if (!st || st->reclaim_depth == 0)
		return;
	if (--st->reclaim_depth == 0)
		end_segment(st, tid, bpf_ktime_get_boot_ns(), oncpu_cause(st));
}

static __always_inline void on_unthrottle(struct cfs_rq *cfs_rq)
{
	__u64 key = (__u64)(unsigned long)cfs_rq;
	__u64 now = bpf_ktime_get_boot_ns();

	bpf_map_update_elem(&unthrottle_ts, &key, &now, BPF_ANY);
}

/* One hook, two attach types (ISO_HOOK, hook.bpf.h). */
ISO_HOOK(sched_switch, iso_sched_switch,
	 ISO_ARGS(bool preempt, struct task_struct *prev, struct task_struct *next),
	 on_switch(preempt, prev, next, btf))
ISO_HOOK(sched_wakeup, iso_sched_wakeup, struct task_struct *p, on_wakeup(p, btf))
ISO_HOOK(sched_waking, iso_sched_waking, struct task_struct *p, on_waking(p, btf))
ISO_HOOK(sched_wakeup_new, iso_sched_wakeup_new, struct task_struct *p, on_wakeup_new(p, btf))
ISO_HOOK(sched_process_exit, iso_sched_exit, struct task_struct *p, on_exit(p))
ISO_HOOK(cgroup_attach_task, iso_cgroup_attach,
	 ISO_ARGS(void *dst, const char *path, struct task_struct *t), on_cgroup_attach(t))
ISO_HOOK(mm_vmscan_direct_reclaim_begin, iso_direct_reclaim_begin, int order, on_reclaim_begin())
ISO_HOOK(mm_vmscan_direct_reclaim_end, iso_direct_reclaim_end, unsigned long nr, on_reclaim_end())
ISO_HOOK(mm_vmscan_memcg_reclaim_begin, iso_memcg_reclaim_begin, int order, on_reclaim_begin())
ISO_HOOK(mm_vmscan_memcg_reclaim_end, iso_memcg_reclaim_end, unsigned long nr, on_reclaim_end())

/* Optional: exact throttle end. fentry preferred, kprobe as its fallback. */
SEC("fentry/unthrottle_cfs_rq")
int BPF_PROG(iso_unthrottle_fentry, struct cfs_rq *cfs_rq)
{
	on_unthrottle(cfs_rq);
	return 0;
}

SEC("kprobe/unthrottle_cfs_rq")
int BPF_KPROBE(iso_unthrottle_kprobe, struct cfs_rq *cfs_rq)
{
	on_unthrottle(cfs_rq);
	return 0;
}
