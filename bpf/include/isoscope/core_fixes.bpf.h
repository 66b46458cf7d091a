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

/*
 * The steal clock of the CPU whose run queue `t` is on (its se.cfs_rq->rq;
 * for the tasks of a sched_switch that is this CPU), and that CPU. Reads
 * rq::prev_steal_time_rq (moved to the paravirtual steal clock at each
 * run-queue clock update) or, where the kernel does not keep it, the
 * tick-based rq::prev_steal_time. Returns false when the kernel has neither
 * (no CONFIG_PARAVIRT_TIME_ACCOUNTING / CONFIG_FAIR_GROUP_SCHED).
 */
static __always_inline bool iso_steal_clock(struct task_struct *t, bool btf, __u64 *clock,
					    __u32 *cpu)
{
	struct cfs_rq *cfs_rq;
	struct rq *rq;

	if (!bpf_core_field_exists(t->se.cfs_rq) || !bpf_core_field_exists(((struct cfs_rq *)0)->rq))
		return false;
	cfs_rq = ISO_RD(btf, t, se.cfs_rq);
	if (!cfs_rq)
		return false;
	/* Direct loads under tp_btf (the hot path: every context switch). */
	rq = ISO_RD(btf, cfs_rq, rq);
	if (!rq)
		return false;
	*cpu = ISO_RD(btf, rq, cpu);
	if (bpf_core_field_exists(rq->prev_steal_time_rq)) {
		*clock = ISO_RD(btf, rq, prev_steal_time_rq);
		if (*clock)
			return true;
	}
	if (bpf_core_field_exists(rq->prev_steal_time)) {
		*clock = ISO_RD(btf, rq, prev_steal_time);
		return true;
	}
	return false;
}

/* request::rq_disk before v5.15 (see struct request_queue in kernel_types.h). */
struct request___pre515 {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

/* The whole disk of a block request as major << 20 | minor (the kernel's
 * dev_t encoding), 0 when unknown. */
static __always_inline __u32 iso_request_dev(struct request *rq)
{
	struct gendisk *disk = NULL;

	if (bpf_core_field_exists(((struct request_queue *)0)->disk))
		disk = BPF_CORE_READ(rq, q, disk);
	else if (bpf_core_field_exists(((struct request___pre515 *)0)->rq_disk))
		disk = BPF_CORE_READ((struct request___pre515 *)rq, rq_disk);
	if (!disk)
		return 0;
	return ((__u32)BPF_CORE_READ(disk, major) << 20) | (__u32)BPF_CORE_READ(disk, first_minor);
}

/*
 * A socket's own addresses (local first; IPv4 in the first 4 bytes, the
 * rest left as the caller zeroed it) and ports in host order, shared by the
 * traceparent and network socket records. Probe reads: valid in any context.
 */
static __always_inline void iso_sock_addrs(const struct sock *sk, __u16 *family, __u8 *saddr,
					   __u8 *daddr, __u16 *sport, __u16 *dport)
{
	*family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (*family == ISO_AF_INET6) {
		BPF_CORE_READ_INTO((struct in6_addr *)saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)daddr, sk, __sk_common.skc_v6_daddr);
	} else {
		BPF_CORE_READ_INTO((__u32 *)saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)daddr, sk, __sk_common.skc_daddr);
	}
	*sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	*dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
}

/* The inode number of the socket's network namespace (as /proc/PID/ns/net),
 * 0 when unknown (a kernel without CONFIG_NET_NS has one netns). */
static __always_inline __u32 iso_sock_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

#endif /* ISOSCOPE_CORE_FIXES_BPF_H */
