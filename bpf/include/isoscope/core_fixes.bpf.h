/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CO-RE flavours: one place for every field that moved or was renamed
 * between the kernels isoscope supports (>= 5.8 with BTF). Each flavour
 * cites the kernel change that made it necessary.
 */
#ifndef ISOSCOPE_CORE_FIXES_BPF_H
#define ISOSCOPE_CORE_FIXES_BPF_H

#include "isoscope/kernel_types.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

/*
 * task_struct::state was renamed to __state (and made unsigned int) in v5.14,
 * commit 2f064a59a11f ("sched: Change task_struct::state").
 */
struct task_struct___pre514 {
	long state;
} __attribute__((preserve_access_index));

/*
 * Field reads come in two forms. `btf` true: the pointer came from a tp_btf
 * argument, so the verifier checks direct loads (no helper call, ~1 ns).
 * `btf` false: raw_tp or kprobe context, read with bpf_probe_read_kernel.
 * Callers pass a literal, so after inlining only one form is compiled.
 */
#define ISO_RD(btf, ptr, field) ((btf) ? (ptr)->field : BPF_CORE_READ(ptr, field))

static __always_inline unsigned int iso_task_state(struct task_struct *t, bool btf)
{
	if (bpf_core_field_exists(t->__state))
		return ISO_RD(btf, t, __state);
	return (unsigned int)ISO_RD(btf, (struct task_struct___pre514 *)t, state);
}

/*
 * The enum value of the cpu controller in css_set::subsys[] depends on the
 * kernel config (which controllers are built in), so it is relocated too.
 */
enum cgroup_subsys_id {
	cpu_cgrp_id = 1,
};

static __always_inline int iso_cpu_cgrp_id(void)
{
	if (bpf_core_enum_value_exists(enum cgroup_subsys_id, cpu_cgrp_id))
		return bpf_core_enum_value(enum cgroup_subsys_id, cpu_cgrp_id);
	return -1;
}

/*
 * cfs_rq::throttle_count exists with CONFIG_CFS_BANDWIDTH (v3.2+). Its meaning
 * is the same before and after the task-based throttle model of v6.18
 * (series "sched/fair: Switch to task based throttle model"):
 * it is > 0 while the cfs_rq or one of its ancestors is throttled. What
 * changed is when a task leaves the CPU: before 6.18 the whole cfs_rq is
 * dequeued at throttle time; from 6.18 each task is dequeued when it next
 * returns to user mode. Both show up as a runnable switch-out with
 * throttle_count > 0 (docs/container-layer.md).
 */
static __always_inline bool iso_task_throttled(struct task_struct *t, __u64 *cfs_rq_key, bool btf)
{
	struct cfs_rq *cfs_rq;

	if (!bpf_core_field_exists(t->se.cfs_rq) ||
	    !bpf_core_field_exists(((struct cfs_rq *)0)->throttle_count))
		return false;
	cfs_rq = ISO_RD(btf, t, se.cfs_rq);
	if (!cfs_rq)
		return false;
	*cfs_rq_key = (__u64)(unsigned long)cfs_rq;
	return ISO_RD(btf, cfs_rq, throttle_count) > 0;
}

#endif /* ISOSCOPE_CORE_FIXES_BPF_H */
