/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One hook, two attach types. ISO_HOOK(tp, fn, args, body) emits
 *
 *   tp_btf/<tp>  program <fn>_btf  (preferred; `btf` is true: direct loads)
 *   raw_tp/<tp>  program <fn>_raw  (fallback for kernels without BTF-typed
 *                                   tracepoints; `btf` is false: probe reads)
 *
 * with the same body; `body` may read the constant `btf` and pass it to the
 * ISO_RD-style readers (core_fixes.bpf.h), which then compile one form only.
 * The loader's program table (agent/programs.cpp) switches one of each pair
 * off. `args` with commas go through ISO_ARGS(...).
 */
#ifndef ISOSCOPE_HOOK_BPF_H
#define ISOSCOPE_HOOK_BPF_H

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define ISO_HOOK(tp, fn, args, body)                                                           \
	SEC("tp_btf/" #tp) int BPF_PROG(fn##_btf, args) { const bool btf = true; (void)btf; body; return 0; } \
	SEC("raw_tp/" #tp) int BPF_PROG(fn##_raw, args) { const bool btf = false; (void)btf; body; return 0; }
#define ISO_ARGS(...) __VA_ARGS__

#endif /* ISOSCOPE_HOOK_BPF_H */
