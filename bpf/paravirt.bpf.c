/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Paravirt layer, block side: block requests timed from the moment they enter
 * the block layer's queue to their completion in the device
 * (docs/hypervisor.md, "Block I/O").
 *
 *   block_rq_insert   the request enters the I/O scheduler (first_ns); the
 *                     context tells who submitted it: a kernel thread here is
 *                     blk-throttle's dispatcher for a bio it held back
 *   block_rq_issue    the driver takes it (issue_ns; first_ns if no insert)
 *   block_rq_merge    merged into another request: freed without completing
 *   block_rq_complete the device finished it: the request's times go to this
 *                     CPU's blk_done slots, where the wake-up of the thread that
 *                     waited on it (container.bpf.c, same context, next) splits
 *                     the thread's I/O wait into io_throttle / virtio_blk / rest
 *
 * Completion runs in interrupt context, so nothing of the issuing thread is
 * read there: the thread is the one the completion wakes. Which disks are
 * virtio-blk is set by user space (virtio_blk_devs, from sysfs).
 */
#define __ISOSCOPE_BPF__ 1
#include "isoscope/kernel_types.h"
#include "isoscope/core_fixes.bpf.h"
#include "isoscope/task.bpf.h"
#include "isoscope/abi.h"
#include "isoscope/maps.bpf.h"
#include "isoscope/hook.bpf.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

extern ISO_STATS_MAP;
extern ISO_BLK_DONE_MAP;

/* Requests in flight: struct request address -> times. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384); /* ~ queue depth x disks; full: counted, not timed */
	__type(key, __u64);
	__type(value, struct iso_blk_req);
} blk_reqs SEC(".maps");

/* Whole-disk dev (major << 20 | minor) -> 1 for virtio-blk disks (user space). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} virtio_blk_devs SEC(".maps");

/* A request's entry lives from insert (or issue) to completion. Request
 * structures are recycled, and one can go without a completion (merged
 * into another: block_rq_merge drops its entry; other paths are bounded by
 * the age check at issue), so an entry is always written fresh here. */
#define ISO_BLK_STALE_NS 5000000000ull /* insert -> issue longer than this: an old entry */

/* The request enters the block layer here (insert, or issue without one):
 * remember when and from which context; nothing else is read on this path. */
static __always_inline void request_start(__u64 key, __u64 now, __u64 issue)
{
	struct iso_blk_req init = {};

	init.first_ns = now;
	init.issue_ns = issue;
	if (BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), flags) & ISO_PF_KTHREAD)
		init.flags = ISO_BLK_F_FROM_KTHREAD;
	if (bpf_map_update_elem(&blk_reqs, &key, &init, BPF_ANY) == -7 /* -E2BIG: full */)
		iso_percpu_inc(&stats, ISO_STAT_BLK_REQS_FULL);
}

static __always_inline void on_rq_insert(struct request *rq)
{
	request_start((__u64)(unsigned long)rq, bpf_ktime_get_boot_ns(), 0);
}

static __always_inline void on_rq_issue(struct request *rq)
{
	__u64 key = (__u64)(unsigned long)rq;
	__u64 now = bpf_ktime_get_boot_ns();
	struct iso_blk_req *r = bpf_map_lookup_elem(&blk_reqs, &key);

	/* Inserted and not issued yet: this request. Anything else is an entry
	 * of an earlier use of the same struct request. */
	if (r && !r->issue_ns && now - r->first_ns < ISO_BLK_STALE_NS)
		r->issue_ns = now;
	else
		request_start(key, now, now);
}

/* `rq` was merged into another request and is freed without completing. */
static __always_inline void on_rq_merge(struct request *rq)
{
	__u64 key = (__u64)(unsigned long)rq;

	bpf_map_delete_elem(&blk_reqs, &key);
}

static __always_inline void on_rq_complete(struct request *rq)
{
	__u64 key = (__u64)(unsigned long)rq;
	struct iso_blk_req *r = bpf_map_lookup_elem(&blk_reqs, &key);
	struct iso_blk_done_cpu *c;
	struct iso_blk_done *d;
	__u32 zero = 0;
	__u32 dev;

	if (!r)
		return;
	c = bpf_map_lookup_elem(&blk_done, &zero);
	if (c && r->issue_ns) {
		d = &c->slot[c->next & (ISO_BLK_DONE_SLOTS - 1)];
		/* The disk is read once per request, here (not on the submit path). */
		dev = iso_request_dev(rq);
		d->first_ns = r->first_ns;
		d->issue_ns = r->issue_ns;
		d->flags = r->flags;
		if (bpf_map_lookup_elem(&virtio_blk_devs, &dev))
			d->flags |= ISO_BLK_F_VIRTIO;
		d->dev = dev;
		d->complete_ns = bpf_ktime_get_boot_ns();
		c->next++;
	}
	/* A request that completes partially (nr_bytes < its size) completes
	 * again; the entry goes now and the rest is timed from nothing. */
	bpf_map_delete_elem(&blk_reqs, &key);
}

ISO_HOOK(block_rq_insert, iso_blk_insert, struct request *rq, on_rq_insert(rq))
ISO_HOOK(block_rq_issue, iso_blk_issue, struct request *rq, on_rq_issue(rq))
ISO_HOOK(block_rq_merge, iso_blk_merge, struct request *rq, on_rq_merge(rq))
ISO_HOOK(block_rq_complete, iso_blk_complete,
	 ISO_ARGS(struct request *rq, int error, unsigned int nr_bytes), on_rq_complete(rq))
