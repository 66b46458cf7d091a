/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writing records to the ring buffer, shared by the program files: reserve a
 * record (or count the loss), fill its header, mark a network record's host
 * netns. The maps and settings they use are defined in one file and extern
 * in the others (maps.bpf.h), so they are passed in, not named here.
 */
#ifndef ISOSCOPE_RECORD_BPF_H
#define ISOSCOPE_RECORD_BPF_H

#include "isoscope/kernel_types.h"
#include "isoscope/task.bpf.h"
#include "isoscope/abi.h"

#include <bpf/bpf_helpers.h>

/*
 * Reserves size bytes in the ring buffer `events_map`; when it is full,
 * counts the lost record in ISO_STAT_RB_RESERVE_FAILED of `stats_map` and
 * returns NULL. Callers pass &events, &stats.
 */
static __always_inline void *iso_reserve(void *events_map, void *stats_map, __u64 size)
{
	void *rec = bpf_ringbuf_reserve(events_map, size, 0);

	if (!rec)
		iso_percpu_inc(stats_map, ISO_STAT_RB_RESERVE_FAILED);
	return rec;
}

/* The record header up to ts_ns, in the order of struct iso_rec_hdr; the
 * cgroup ids are the caller's (iso_fill_hdr, iso_fill_task_hdr). */
static __always_inline void iso_fill_hdr_base(struct iso_rec_hdr *h, __u16 kind, __u16 size,
					      __u32 tgid, __u32 tid, __u64 ts_ns)
{
	h->kind = kind;
	h->size = size;
	h->abi_version = ISO_ABI_VERSION;
	h->flags = 0;
	h->tgid = tgid;
	h->tid = tid;
	h->ts_ns = ts_ns;
}

/* The record header, every field. */
static __always_inline void iso_fill_hdr(struct iso_rec_hdr *h, __u16 kind, __u16 size, __u32 tgid,
					 __u32 tid, __u64 ts_ns, __u64 cgroup_v2_id,
					 __u64 cgroup_v1_cpu_id)
{
	iso_fill_hdr_base(h, kind, size, tgid, tid, ts_ns);
	h->cgroup_v2_id = cgroup_v2_id;
	h->cgroup_v1_cpu_id = cgroup_v1_cpu_id;
}

/* The header of a record written in the context of `task` (the current
 * task, pid_tgid from bpf_get_current_pid_tgid()): its ids and cgroups. */
static __always_inline void iso_fill_task_hdr(struct iso_rec_hdr *h, __u16 kind, __u16 size,
					      __u64 pid_tgid, struct task_struct *task, __u64 ts_ns)
{
	iso_fill_hdr_base(h, kind, size, pid_tgid >> 32, (__u32)pid_tgid, ts_ns);
	iso_task_cgroup_ids(task, &h->cgroup_v2_id, &h->cgroup_v1_cpu_id);
}

/*
 * Sets ISO_NET_F_HOST_NETNS on a network record whose netns_ino is the
 * agent's (host) netns. Callers pass &host_netns_ino, the loader's setting
 * (rodata of network.bpf.c, extern elsewhere); it is read only for a known
 * netns (0 is unknown, never the host's).
 */
static __always_inline void iso_mark_host_netns(struct iso_rec_net *r,
						const volatile __u32 *host_ino)
{
	if (r->netns_ino && r->netns_ino == *host_ino)
		r->flags |= ISO_NET_F_HOST_NETNS;
}

#endif /* ISOSCOPE_RECORD_BPF_H */
