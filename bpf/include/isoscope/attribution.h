/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Attribution arithmetic of the hypervisor/paravirt causes, free of kernel
 * types: compiled into the BPF programs (container.bpf.c) and unit-tested in
 * C++ (tests/unit/attribution_test.cpp) with synthetic inputs.
 */
#ifndef ISOSCOPE_ATTRIBUTION_H
#define ISOSCOPE_ATTRIBUTION_H

#include "isoscope/abi.h"

#define ISO_ATTR_INLINE static inline __attribute__((always_inline))

/* Completion -> wake-up of the waiter: the same context, a few µs apart. */
#define ISO_BLK_WAKE_WINDOW_NS 1000000ull

/*
 * Steal in a segment [seg_start, now): the advance of the CPU's steal clock
 * since the segment's mark, at most the segment's length; 0 when the clock
 * did not move or the segment is empty.
 */
ISO_ATTR_INLINE __u64 iso_steal_in_segment(__u64 seg_start, __u64 now, __u64 mark, __u64 clock)
{
	__u64 d, len;

	if (now <= seg_start || clock <= mark)
		return 0;
	d = clock - mark;
	len = now - seg_start;
	return d < len ? d : len;
}

/*
 * How an I/O wait [start, now) that ends with the wake-up by request `d`
 * splits: [start, throttle_end) held back by blk-throttle,
 * [device_start, device_end) in a virtio-blk device; each empty (end ==
 * start) when it does not apply. Returns 0 when `d` is not the completion
 * that woke this wait (no split).
 */
struct iso_blk_parts {
	__u64 throttle_end;
	__u64 device_start;
	__u64 device_end;
};

ISO_ATTR_INLINE int iso_blk_split(__u64 start, __u64 now, const struct iso_blk_done *d,
				  struct iso_blk_parts *out)
{
	__u64 t;

	out->throttle_end = start;
	out->device_start = start;
	out->device_end = start;
	if (!d->complete_ns || d->complete_ns < start || d->complete_ns > now ||
	    now - d->complete_ns > ISO_BLK_WAKE_WINDOW_NS)
		return 0;
	if ((d->flags & ISO_BLK_F_FROM_KTHREAD) && d->first_ns > start)
		out->throttle_end = d->first_ns < d->complete_ns ? d->first_ns : d->complete_ns;
	out->device_start = out->throttle_end;
	out->device_end = out->throttle_end;
	if (d->flags & ISO_BLK_F_VIRTIO) {
		t = d->issue_ns > out->throttle_end ? d->issue_ns : out->throttle_end;
		if (t < d->complete_ns) {
			out->device_start = t;
			out->device_end = d->complete_ns;
		}
	}
	return 1;
}

#endif /* ISOSCOPE_ATTRIBUTION_H */
