/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the BPF programs. */
#ifndef ISOSCOPE_TASK_BPF_H
#define ISOSCOPE_TASK_BPF_H

#include "isoscope/core_fixes.bpf.h"

/* The task's cgroup v2 id and the id of its cpu controller's cgroup (the v1
 * cpu hierarchy on hybrid hosts; the v2 cgroup with cpu enabled on pure v2). */
static __always_inline void iso_task_cgroup_ids(struct task_struct *t, __u64 *v2, __u64 *v1_cpu)
{
	struct css_set *cset = BPF_CORE_READ(t, cgroups);
	struct cgroup_subsys_state *css = NULL;
	int cpu_id = iso_cpu_cgrp_id();

	*v2 = BPF_CORE_READ(cset, dfl_cgrp, kn, id);
	*v1_cpu = 0;
	if (cpu_id >= 0 && cpu_id < 14) {
		bpf_core_read(&css, sizeof(css), &cset->subsys[cpu_id]);
		if (css)
			*v1_cpu = BPF_CORE_READ(css, cgroup, kn, id);
	}
}

/* Adds one to slot `idx` of a per-CPU __u32 -> __u64 array (the `stats` map). */
static __always_inline void iso_percpu_inc(void *map, __u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(map, &idx);

	if (v)
		*v += 1;
}

#endif /* ISOSCOPE_TASK_BPF_H */
