/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The maps that several program files share. bpftool gen object links the
 * files into one object; a map defined in one file is declared `extern` in
 * the others, and libbpf 1.1's linker requires both to match exactly
 * (max_entries included): each shape is written once here.
 *
 *   ISO_EVENTS_MAP   the ring buffer of all records (defined in container.bpf.c)
 *   ISO_STATS_MAP    the per-CPU self counters, index enum iso_stat (container.bpf.c)
 *   ISO_RCVQ_MAP     socket -> first unread data time (network.bpf.c; closed in
 *                    trace_context.bpf.c)
 *   ISO_TASKS_MAP    tid -> struct iso_thread_totals (container.bpf.c; the vCPU
 *                    states of hypervisor.bpf.c live in the same entry)
 *   ISO_BLK_DONE_MAP per CPU: the last block requests completed there
 *                    (written by paravirt.bpf.c, consumed by container.bpf.c's
 *                    wake-up; defined in container.bpf.c, linked first)
 *
 * Link order (CMakeLists.txt): a map's defining file comes before the files
 * that declare it extern.
 */
#ifndef ISOSCOPE_MAPS_BPF_H
#define ISOSCOPE_MAPS_BPF_H

#define ISO_EVENTS_MAP                                                                  \
	struct {                                                                        \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                                     \
		__uint(max_entries, 4 << 20); /* resized by the loader */               \
	} events SEC(".maps")

#define ISO_STATS_MAP                                                                   \
	struct {                                                                        \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                                \
		__uint(max_entries, ISO_STAT_MAX);                                      \
		__type(key, __u32);                                                     \
		__type(value, __u64);                                                   \
	} stats SEC(".maps")

#define ISO_RCVQ_MAP                                                                    \
	struct {                                                                        \
		__uint(type, BPF_MAP_TYPE_LRU_HASH);                                    \
		__uint(max_entries, 16384);                                             \
		__type(key, __u64);                                                     \
		__type(value, __u64);                                                   \
	} rcvq SEC(".maps")

#define ISO_TASKS_MAP                                                                   \
	struct {                                                                        \
		__uint(type, BPF_MAP_TYPE_HASH);                                        \
		__uint(max_entries, 65536); /* resized by the loader */                 \
		__type(key, __u32);         /* tid */                                   \
		__type(value, struct iso_thread_totals);                                \
	} tasks SEC(".maps")

#define ISO_BLK_DONE_MAP                                                                \
	struct {                                                                        \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                                \
		__uint(max_entries, 1);                                                 \
		__type(key, __u32);                                                     \
		__type(value, struct iso_blk_done_cpu);                                 \
	} blk_done SEC(".maps")

#endif /* ISOSCOPE_MAPS_BPF_H */
