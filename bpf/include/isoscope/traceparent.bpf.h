/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The W3C traceparent value parser (trace context level 1), shared by the
 * BPF side (bpf/trace_context.bpf.c, reads and writes) and user space (unit
 * tests, tests/fuzz/traceparent_fuzzer.cpp). No BPF helper inside: the
 * caller hands in the bytes. Compiles as BPF C (-target bpf,
 * __ISOSCOPE_BPF__), as C and as C++.
 *
 * The value is exactly ISO_TP_VALUE_LEN bytes:
 *   version "-" trace-id "-" parent-id "-" trace-flags
 *   2 hex     32 hex       16 hex        2 hex
 * hex is lower case only; version "ff" is invalid; an all-zero trace-id or
 * parent-id is invalid. Only these 55 bytes are looked at: what follows the
 * value (end of line, or a later version's extra fields) is the caller's
 * business.
 */
#ifndef ISOSCOPE_TRACEPARENT_BPF_H
#define ISOSCOPE_TRACEPARENT_BPF_H

#ifdef __ISOSCOPE_BPF__
/* kernel_types.h provides __u8.. */
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
#define ISO_TP_INLINE static __always_inline
#else
#include <linux/types.h>
#define ISO_TP_INLINE static inline
#endif

#define ISO_TP_VALUE_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */

/* Plain loops in BPF: unrolled, the 50 table lookups spill to ~480 bytes of
 * stack, and a program plus its bpf_loop callback must fit 512 bytes on
 * older kernels (6.1). */
#if defined(__clang__)
#define ISO_TP_NO_UNROLL _Pragma("clang loop unroll(disable)")
#else
#define ISO_TP_NO_UNROLL
#endif

/* Hex digit values; 0x10 marks a byte that is not a lower-case hex digit. A
 * table keeps the parse free of branches, which keeps the verifier's path
 * count small. volatile: in BPF the table stays one .rodata array read by
 * index instead of being turned into compare chains. */
#define ISO_TP_H16 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10
static const volatile __u8 iso_tp_hex_table[256] = {
	ISO_TP_H16, ISO_TP_H16, ISO_TP_H16,                                 /* 0x00-0x2f */
	0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, /* 0x30-0x3f */
	ISO_TP_H16, ISO_TP_H16,                                             /* 0x40-0x5f */
	0x10, 10, 11, 12, 13, 14, 15, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, /* 0x60 */
	ISO_TP_H16, ISO_TP_H16, ISO_TP_H16, ISO_TP_H16, ISO_TP_H16,         /* 0x70-0xbf */
	ISO_TP_H16, ISO_TP_H16, ISO_TP_H16, ISO_TP_H16,                     /* 0xc0-0xff */
};
#undef ISO_TP_H16

ISO_TP_INLINE __u8 iso_tp_hexval(char c)
{
	return iso_tp_hex_table[(__u8)c];
}

/*
 * Parses the ISO_TP_VALUE_LEN bytes at v. Writes trace_id, span_id and
 * *trace_flags (also when the value turns out invalid: callers discard
 * them) and returns 1 when the value is valid, 0 otherwise.
 */
ISO_TP_INLINE int iso_tp_parse(const char *v, __u8 *trace_id, __u8 *span_id, __u8 *trace_flags)
{
	__u8 acc = 0, tid_or = 0, sid_or = 0;
	int j;

	ISO_TP_NO_UNROLL
	for (j = 0; j < 16; j++) {
		__u8 hi = iso_tp_hexval(v[3 + 2 * j]), lo = iso_tp_hexval(v[4 + 2 * j]);
		__u8 b = (__u8)((hi << 4) | (lo & 0xf));

		acc |= hi | lo;
		tid_or |= b;
		trace_id[j] = b;
	}
	ISO_TP_NO_UNROLL
	for (j = 0; j < 8; j++) {
		__u8 hi = iso_tp_hexval(v[36 + 2 * j]), lo = iso_tp_hexval(v[37 + 2 * j]);
		__u8 b = (__u8)((hi << 4) | (lo & 0xf));

		acc |= hi | lo;
		sid_or |= b;
		span_id[j] = b;
	}
	{
		__u8 hi = iso_tp_hexval(v[53]), lo = iso_tp_hexval(v[54]);

		acc |= hi | lo;
		*trace_flags = (__u8)((hi << 4) | (lo & 0xf));
	}
	acc |= iso_tp_hexval(v[0]) | iso_tp_hexval(v[1]);
	return !((acc & 0x10) || (v[0] == 'f' && v[1] == 'f') || v[2] != '-' || v[35] != '-' ||
		 v[52] != '-' || tid_or == 0 || sid_or == 0);
}

#endif /* ISOSCOPE_TRACEPARENT_BPF_H */
