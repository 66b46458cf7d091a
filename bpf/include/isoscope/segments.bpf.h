/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A thread's segments (container.bpf.c, docs/container-layer.md): the open
 * segment [seg_start_ns, now) of a `tasks` entry belongs to seg_cause; each
 * event closes it into cause_ns[] and opens the next. Shared by the program
 * files that move a thread between causes (container.bpf.c: scheduler and
 * reclaim; hypervisor.bpf.c: a vCPU thread's guest entries and exits).
 *
 * The including file defines or declares extern, before including this:
 * the `tasks`, `events` and `stats` maps and the settings filter_tgid,
 * stream_min_ns and track_kthreads.
 */
#ifndef ISOSCOPE_SEGMENTS_BPF_H
#define ISOSCOPE_SEGMENTS_BPF_H

#include "isoscope/kernel_types.h"
#include "isoscope/core_fixes.bpf.h"
#include "isoscope/task.bpf.h"
#include "isoscope/abi.h"
#include "isoscope/record.bpf.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

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
	init.steal_cpu = ISO_NO_CPU;
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

	if (open < ISO_THREAD_CAUSES && now > st->seg_start_ns) {
		st->cause_ns[open] += now - st->seg_start_ns;
		/* A vCPU asleep in an exit: the guest halted (HLT until a wake-up). */
		if (open == ISO_CAUSE_APP_BLOCKED_OTHER && st->vcpu_state == ISO_VCPU_EXIT)
			st->halted_ns += now - st->seg_start_ns;
	}
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

/* The cause of on-CPU time: the thread's own work, or for a vCPU thread the
 * kernel's exit handling / the VMM's handling of a userspace exit. */
static __always_inline __u32 oncpu_cause(const struct iso_thread_totals *st)
{
	if (st->vcpu_state == ISO_VCPU_EXIT)
		return ISO_CAUSE_HYPERVISOR_VMEXIT;
	if (st->vcpu_state == ISO_VCPU_VMM)
		return ISO_CAUSE_PARAVIRT_VMM_EXIT;
	return ISO_CAUSE_APP_ON_CPU;
}

#endif /* ISOSCOPE_SEGMENTS_BPF_H */
