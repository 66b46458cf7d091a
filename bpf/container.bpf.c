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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* resized by the loader */
	__type(key, __u32);         /* tid */
	__type(value, struct iso_thread_totals);
} tasks SEC(".maps");

ISO_EVENTS_MAP;
ISO_STATS_MAP;

/* cfs_rq key -> boot ns of its last unthrottle (filled by the optional probes). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} unthrottle_ts SEC(".maps");

static __always_inline bool wanted(struct task_struct *t, bool btf)
{
	if (!track_kthreads && (ISO_RD(btf, t, flags) & ISO_PF_KTHREAD))
		return false;
	if (filter_tgid && (__u32)ISO_RD(btf, t, tgid) != filter_tgid)
		return false;
	return true;
}

static __always_inline void refresh_cgroups(struct task_struct *t, struct iso_thread_totals *st)
{
	iso_task_cgroup_ids(t, &st->cgroup_v2_id, &st->cgroup_v1_cpu_id);
	st->flags &= ~ISO_TF_CGROUP_STALE;
}

static __always_inline struct iso_thread_totals *create_state(struct task_struct *t, __u32 tid,
							      __u64 now, __u32 cause)
{
	struct iso_thread_totals init = {};

	init.tgid = BPF_CORE_READ(t, tgid);
	init.seg_start_ns = now;
	init.seg_cause = cause;
	if (BPF_CORE_READ(t, flags) & ISO_PF_KTHREAD)
		init.flags |= ISO_TF_KTHREAD;
	BPF_CORE_READ_STR_INTO(&init.comm, t, comm);
	refresh_cgroups(t, &init);
	if (bpf_map_update_elem(&tasks, &tid, &init, BPF_NOEXIST) && bpf_map_lookup_elem(&tasks, &tid) == NULL) {
		iso_percpu_inc(&stats, ISO_STAT_TASKS_FULL);
		return NULL;
	}
	return bpf_map_lookup_elem(&tasks, &tid);
}

/* Closes the open segment at `now` and opens one with `cause`. */
static __always_inline void set_segment(struct iso_thread_totals *st, __u64 now, __u32 cause)
{
	__u32 open = st->seg_cause;

	if (open < ISO_THREAD_CAUSES && now > st->seg_start_ns)
		st->cause_ns[open] += now - st->seg_start_ns;
	st->seg_start_ns = now;
	st->seg_cause = st->reclaim_depth ? ISO_CAUSE_CONTAINER_MEMORY_RECLAIM : cause;
}

static __always_inline void stream_delay(const struct iso_thread_totals *st, __u32 tid, __u64 start,
					 __u64 now, __u32 cause)
{
	struct iso_rec_delay *rec;

	if (cause == ISO_CAUSE_APP_ON_CPU || now - start < stream_min_ns)
		return;
	rec = iso_reserve(&events, &stats, sizeof(*rec));
	if (!rec)
		return;
	iso_fill_hdr(&rec->hdr, ISO_REC_DELAY, sizeof(*rec), st->tgid, tid, now, st->cgroup_v2_id,
		     st->cgroup_v1_cpu_id);
	rec->start_ns = start;
	rec->cause = cause;
	rec->cpu = bpf_get_smp_processor_id();
	bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
}

/* Closes the open segment and streams it if it is a delay worth keeping. */
static __always_inline void end_segment(struct iso_thread_totals *st, __u32 tid, __u64 now,
					__u32 next_cause)
{
	__u64 start = st->seg_start_ns;
	__u32 cause = st->seg_cause;

	set_segment(st, now, next_cause);
	stream_delay(st, tid, start, now, cause);
}

static __always_inline __u32 runnable_cause(struct task_struct *t, struct iso_thread_totals *st,
					    bool btf)
{
	__u64 key = 0;

	if (iso_task_throttled(t, &key, btf)) {
		st->throttled_cfs_rq = key;
		return ISO_CAUSE_CONTAINER_CPU_THROTTLE;
	}
	st->throttled_cfs_rq = 0;
	return ISO_CAUSE_CONTAINER_RUNQUEUE;
}

static __always_inline void on_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
				      bool btf)
{
	__u64 now = bpf_ktime_get_boot_ns();
	struct iso_thread_totals *st;
	__u32 tid;

	tid = ISO_RD(btf, prev, pid);
	if (tid) {
		unsigned int state = iso_task_state(prev, btf);

		st = bpf_map_lookup_elem(&tasks, &tid);
		if (!st && !(state & ISO_TASK_DEAD) && wanted(prev, btf))
			st = create_state(prev, tid, now, ISO_CAUSE_APP_ON_CPU);
		if (st) {
			__u32 cause;

			if (st->flags & ISO_TF_CGROUP_STALE)
				refresh_cgroups(prev, st);
			if (preempt || state == ISO_TASK_RUNNING)
				cause = runnable_cause(prev, st, btf);
			else if (btf ? BPF_CORE_READ_BITFIELD(prev, in_iowait)
				     : BPF_CORE_READ_BITFIELD_PROBED(prev, in_iowait))
				cause = ISO_CAUSE_APP_BLOCKED_IO;
			else
				cause = ISO_CAUSE_APP_BLOCKED_OTHER;
			set_segment(st, now, cause);
		}
	}

	tid = ISO_RD(btf, next, pid);
	if (!tid)
		return;
	st = bpf_map_lookup_elem(&tasks, &tid);
	if (!st) {
		if (wanted(next, btf))
			create_state(next, tid, now, ISO_CAUSE_APP_ON_CPU);
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
	end_segment(st, tid, now, ISO_CAUSE_APP_ON_CPU);
}

static __always_inline void on_wakeup(struct task_struct *p, bool btf)
{
	__u32 tid = ISO_RD(btf, p, pid);
	struct iso_thread_totals *st = bpf_map_lookup_elem(&tasks, &tid);

	if (!st)
		return;
	if (st->seg_cause == ISO_CAUSE_APP_BLOCKED_IO || st->seg_cause == ISO_CAUSE_APP_BLOCKED_OTHER ||
	    st->seg_cause == ISO_CAUSE_CONTAINER_MEMORY_RECLAIM)
		end_segment(st, tid, bpf_ktime_get_boot_ns(), runnable_cause(p, st, btf));
}

static __always_inline void on_wakeup_new(struct task_struct *p, bool btf)
{
	__u32 tid = ISO_RD(btf, p, pid);
	struct iso_thread_totals *st;

	if (!wanted(p, btf))
		return;
	st = create_state(p, tid, bpf_ktime_get_boot_ns(), ISO_CAUSE_CONTAINER_RUNQUEUE);
	if (st)
		st->seg_cause = runnable_cause(p, st, btf);
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
	set_segment(st, now, ISO_CAUSE_APP_ON_CPU);
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
		end_segment(st, tid, bpf_ktime_get_boot_ns(), ISO_CAUSE_APP_ON_CPU);
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
