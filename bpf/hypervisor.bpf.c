/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hypervisor layer, host side: vCPU threads of the VMMs running on this node
 * (docs/hypervisor.md). A thread that runs KVM_RUN is a vCPU; its wall time
 * splits into
 *
 *   in the guest            kvm_entry -> kvm_exit             app.on_cpu (the VM's own work)
 *   kernel exit handling    kvm_exit -> kvm_entry             hypervisor.vmexit (by reason)
 *                           asleep there (HLT until wake-up)  app.blocked_other (idle guest)
 *   the VMM's exit handling kvm_userspace_exit -> KVM_RUN     paravirt.vmm_exit (by reason)
 *   runnable, not running   any state                         hypervisor.steal
 *
 * The state lives in the thread's `tasks` entry (vcpu_state), so the
 * scheduler hooks of container.bpf.c pick the cause of each on-CPU or
 * off-CPU segment from it; these hooks only move the thread between states.
 * Exits are also counted per (thread, reason) in vcpu_exits, with the time
 * until the exit was handled.
 *
 * Classic tracepoints, not tp_btf/raw_tp: kvm_exit's typed arguments are the
 * vCPU and the ISA, and the reason would have to be read from vendor
 * structures (vcpu_vmx::exit_reason, vcpu_svm's VMCB) whose layout is private
 * to kvm-intel/kvm-amd; the tracepoint's own record has exit_reason and isa
 * as plain fields, relocated by name against vmlinux or the kvm module's BTF
 * (bcc's kvmexit went back to the regular tracepoint for the same reason).
 * kvm_fpu(load) marks the start of each KVM_RUN: it ends the VMM's handling
 * even on kernels where the guest never enters (KVM's instruction emulator,
 * which fires no kvm_entry).
 */
#define __ISOSCOPE_BPF__ 1
#include "isoscope/kernel_types.h"
#include "isoscope/core_fixes.bpf.h"
#include "isoscope/task.bpf.h"
#include "isoscope/abi.h"
#include "isoscope/maps.bpf.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

extern const volatile __u32 filter_tgid;
extern const volatile __u64 stream_min_ns;
extern const volatile bool track_kthreads;

extern ISO_TASKS_MAP;
extern ISO_EVENTS_MAP;
extern ISO_STATS_MAP;

#include "isoscope/segments.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384); /* vCPUs x reasons; user space drops dead threads' keys;
				       full: counted in ISO_STAT_KVM_EXITS_FULL */
	__type(key, struct iso_kvm_exit_key);
	__type(value, struct iso_kvm_exit_val);
} vcpu_exits SEC(".maps");

static __always_inline struct iso_thread_totals *vcpu(__u32 tid, __u64 now)
{
	struct iso_thread_totals *st = bpf_map_lookup_elem(&tasks, &tid);
	struct task_struct *t;

	if (st)
		return st;
	t = (struct task_struct *)bpf_get_current_task();
	if (!wanted(t, false))
		return NULL;
	return create_state(t, tid, now, ISO_CAUSE_APP_ON_CPU);
}

/* Adds to the (thread, isa, reason) entry: the exit when it opens (count),
 * its time when it closes (ns) — so an exit still open at a snapshot or at
 * the thread's end is counted. */
static __always_inline void count_exit(const struct iso_thread_totals *st, __u32 tid, __u32 isa,
				       __u32 reason, __u64 count, __u64 ns)
{
	struct iso_kvm_exit_key key = {.tid = tid, .isa = (__u16)isa, .reason = reason};
	struct iso_kvm_exit_val *v = bpf_map_lookup_elem(&vcpu_exits, &key);

	if (v) {
		v->count += count;
		v->ns += ns;
		return;
	}
	struct iso_kvm_exit_val init = {};

	init.count = count;
	init.ns = ns;
	init.tgid = st->tgid;
	init.cgroup_v2_id = st->cgroup_v2_id;
	init.cgroup_v1_cpu_id = st->cgroup_v1_cpu_id;
	if (bpf_map_update_elem(&vcpu_exits, &key, &init, BPF_NOEXIST) == -7 /* -E2BIG */)
		iso_percpu_inc(&stats, ISO_STAT_KVM_EXITS_FULL);
}

/* Closes the open exit (kernel or userspace): its time goes to its reason. */
static __always_inline void close_exit(struct iso_thread_totals *st, __u32 tid, __u64 now)
{
	if ((st->vcpu_state == ISO_VCPU_EXIT || st->vcpu_state == ISO_VCPU_VMM) &&
	    now > st->exit_start_ns)
		count_exit(st, tid, st->exit_isa, st->exit_reason, 0, now - st->exit_start_ns);
}

/* An exit opens at `now`: the open one (if any) is handled, and the thread
 * is in `state` (the kernel's or the VMM's handling) with `cause` until the
 * next entry or KVM_RUN. */
static __always_inline void exit_to(struct iso_thread_totals *st, __u32 tid, __u64 now,
				    __u32 state, __u32 cause, __u32 isa, __u32 reason)
{
	close_exit(st, tid, now);
	st->flags |= ISO_TF_VCPU;
	st->vcpu_state = state;
	end_segment(st, tid, now, cause);
	st->exit_start_ns = now;
	st->exit_isa = isa;
	st->exit_reason = reason;
	count_exit(st, tid, isa, reason, 1, 0);
}

/* The thread runs the guest from `now`: the open exit (if any) is handled. */
static __always_inline void enter_guest(struct iso_thread_totals *st, __u32 tid, __u64 now)
{
	close_exit(st, tid, now);
	st->flags |= ISO_TF_VCPU;
	st->vcpu_state = ISO_VCPU_GUEST;
	end_segment(st, tid, now, ISO_CAUSE_APP_ON_CPU);
}

SEC("tracepoint/kvm/kvm_exit")
int iso_kvm_exit(struct trace_event_raw_kvm_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 now = bpf_ktime_get_boot_ns();
	struct iso_thread_totals *st = vcpu(tid, now);

	if (st)
		exit_to(st, tid, now, ISO_VCPU_EXIT, ISO_CAUSE_HYPERVISOR_VMEXIT, BPF_CORE_READ(ctx, isa),
			BPF_CORE_READ(ctx, exit_reason));
	return 0;
}

SEC("tracepoint/kvm/kvm_entry")
int iso_kvm_entry(void *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 now = bpf_ktime_get_boot_ns();
	struct iso_thread_totals *st = vcpu(tid, now);

	if (st)
		enter_guest(st, tid, now);
	return 0;
}

SEC("tracepoint/kvm/kvm_userspace_exit")
int iso_kvm_userspace_exit(struct trace_event_raw_kvm_userspace_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 now = bpf_ktime_get_boot_ns();
	struct iso_thread_totals *st = vcpu(tid, now);

	/* The kernel's part of this exit closes; the VMM's opens. */
	if (st)
		exit_to(st, tid, now, ISO_VCPU_VMM, ISO_CAUSE_PARAVIRT_VMM_EXIT, ISO_KVM_ISA_USERSPACE,
			BPF_CORE_READ(ctx, reason));
	return 0;
}

SEC("tracepoint/kvm/kvm_fpu")
int iso_kvm_fpu(struct trace_event_raw_kvm_fpu *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 now;
	struct iso_thread_totals *st;

	if (!BPF_CORE_READ(ctx, load))
		return 0;
	now = bpf_ktime_get_boot_ns();
	st = vcpu(tid, now);
	if (!st || st->vcpu_state == ISO_VCPU_GUEST || st->vcpu_state == ISO_VCPU_EXIT)
		return 0;
	/* KVM_RUN began: the VMM's handling (if any) ends; until an exit says
	 * otherwise the thread runs the guest. */
	enter_guest(st, tid, now);
	return 0;
}
