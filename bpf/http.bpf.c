/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Horizontal axis: binds W3C trace context to the thread that read the
 * request. On each read()/recvfrom() that returns data on a socket and looks
 * like the head of an HTTP/1.x request (or continues one whose head has not
 * ended), the first ISO_SCAN_BYTES bytes are scanned in the kernel for a
 * `traceparent` header; only the parsed ids leave the kernel (ISO_REC_TRACEPARENT),
 * never header bytes. Bodies are never read: scanning stops at the end of the
 * head, and a connection is followed for at most max_head_reads reads.
 *
 * Linked with container.bpf.c into one object (bpftool gen object); the ring
 * buffer, the stats array and filter_tgid are defined there.
 */
#define __ISOSCOPE_BPF__ 1
#include "isoscope/kernel_types.h"
#include "isoscope/core_fixes.bpf.h"
#include "isoscope/task.bpf.h"
#include "isoscope/abi.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#define ISO_SCAN_BYTES 1024
#define ISO_TP_VALUE_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */

extern const volatile __u32 filter_tgid;
const volatile __u32 max_head_reads = 4;

extern struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* must match the definition; resized at load */
} events SEC(".maps");

extern struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ISO_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* socket -> reads seen of a request head that has not ended yet. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} http_heads SEC(".maps");

struct scratch {
	char buf[ISO_SCAN_BYTES + 64];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} http_scratch SEC(".maps");

/* Tracepoint formats (tracefs events/syscalls/.../format; stable). */
struct sys_exit_args {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__s64 ret;
};

static __always_inline bool is_method(const char *b)
{
	/* GET POST PUT HEAD DELETE PATCH OPTIONS (first 4 bytes). */
	__u32 w = (__u32)b[0] | (__u32)b[1] << 8 | (__u32)b[2] << 16 | (__u32)b[3] << 24;

	return w == 0x20544547 /* "GET " */ || w == 0x54534f50 /* "POST" */ ||
	       w == 0x20545550 /* "PUT " */ || w == 0x44414548 /* "HEAD" */ ||
	       w == 0x454c4544 /* "DELE" */ || w == 0x43544150 /* "PATC" */ ||
	       w == 0x4954504f /* "OPTI" */;
}

/* Hex digit values; 0x10 marks a byte that is not a lower-case hex digit
 * (W3C trace context allows lower case only). A table keeps the parse free of
 * branches, which keeps the verifier's path count small. */
#define H16 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10
static const volatile __u8 hex_table[256] = {
	H16, H16, H16,                                                      /* 0x00-0x2f */
	0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, /* 0x30-0x3f */
	H16, H16,                                                           /* 0x40-0x5f */
	0x10, 10, 11, 12, 13, 14, 15, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, /* 0x60 */
	H16, H16, H16, H16, H16, H16, H16, H16, H16,                        /* 0x70-0xff */
};
_Static_assert(sizeof(hex_table) == 256, "one entry per byte value");

static __always_inline __u8 hexval(char c)
{
	return hex_table[(__u8)c];
}

/* Case-insensitive match of `lit` (lower case) at p. */
#define ISO_MATCH_CI(p, lit)                                                            \
	({                                                                              \
		bool ok_ = true;                                                        \
		_Pragma("unroll") for (int k_ = 0; k_ < (int)sizeof(lit) - 1; k_++)     \
			ok_ &= (((p)[k_] | 0x20) == (lit)[k_]);                         \
		ok_;                                                                    \
	})

struct scan_ctx {
	struct scratch *s;
	int n;
	__u32 read_index;
	int tp_at;
	__u8 flags;
	bool head_end;
};

static long scan_step(__u32 i, void *data)
{
	struct scan_ctx *c = data;
	__u64 at = i;
	const char *p;

	/* The empty asm hides what the compiler knows of `at`, so the bound check
	 * below stays on the very register used as the index (the verifier needs it
	 * there). */
	asm volatile("" : "+r"(at));
	if (at >= ISO_SCAN_BYTES || (int)i >= c->n)
		return 1;
	if (at == 0) {
		if (c->read_index == 0)
			return 0;
	} else {
		/* Older verifiers (6.1) do not carry at >= 1 into this branch:
		 * bound the previous index on its own register. */
		__u64 before = at - 1;

		asm volatile("" : "+r"(before));
		if (before >= ISO_SCAN_BYTES || c->s->buf[before] != '\n')
			return 0;
	}
	p = &c->s->buf[at];
	if (p[0] == '\r' && p[1] == '\n') {
		c->head_end = true;
		return 1;
	}
	if (c->tp_at < 0 && ISO_MATCH_CI(p, "traceparent:"))
		c->tp_at = i + 12;
	else if (ISO_MATCH_CI(p, "tracestate:"))
		c->flags |= ISO_TP_F_TRACESTATE;
	return 0;
}

/* The open file behind fd, or NULL. Direct (BTF) loads except for the fd
 * array element, whose variable offset needs a probe read. */
static __always_inline struct file *fd_file(struct task_struct *t, __u32 fd)
{
	struct files_struct *files = t->files;
	struct fdtable *fdt;
	struct file **fds;
	struct file *f = NULL;

	if (!files)
		return NULL;
	fdt = files->fdt;
	if (!fdt || fd >= fdt->max_fds)
		return NULL;
	fds = fdt->fd;
	bpf_core_read(&f, sizeof(f), &fds[fd]);
	return f;
}

static __always_inline int on_exit(__s64 ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct task_struct *task;
	struct pt_regs *regs;
	__u32 fd;
	__u64 buf;
	struct scratch *s;
	struct file *f;
	struct sock *sk;
	__u32 zero = 0, *reads, read_index = 0;
	__u64 key;
	int n, tp_at = -1;
	__u8 flags = 0;
	bool head_end = false;

	if (ret <= 0 || (filter_tgid && (id >> 32) != filter_tgid))
		return 0;
	/* read(fd, buf, n) and recvfrom(fd, buf, n, ...) keep their arguments in
	 * the task's saved user registers (only ax holds the return value), so
	 * no entry probe and no per-read map are needed. */
	task = bpf_get_current_task_btf();
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	fd = (__u32)regs->di; /* a BTF pointer: direct loads */
	buf = regs->si;
	f = fd_file(task, fd);
	/* f came from a probe read (an untyped scalar), so probe reads from here. */
	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & ISO_S_IFMT) != ISO_S_IFSOCK)
		return 0;
	{
		struct socket *sock = BPF_CORE_READ(f, private_data);

		sk = BPF_CORE_READ(sock, sk);
	}
	if (!sk)
		return 0;
	key = (__u64)(unsigned long)sk;

	s = bpf_map_lookup_elem(&http_scratch, &zero);
	if (!s)
		return 0;
	n = ret < ISO_SCAN_BYTES ? (int)ret : ISO_SCAN_BYTES;
	if (bpf_probe_read_user(s->buf, n & (ISO_SCAN_BYTES - 1) ? n & (ISO_SCAN_BYTES - 1) : ISO_SCAN_BYTES,
				(void *)buf))
		return 0;

	reads = bpf_map_lookup_elem(&http_heads, &key);
	if (reads) {
		read_index = *reads;
	} else if (n < 4 || !is_method(s->buf)) {
		return 0;
	}
	iso_percpu_inc(&stats, ISO_STAT_HTTP_HEADS);

	/* Find "\ntraceparent:", "\ntracestate:" and the end of the head with
	 * bpf_loop (v5.17+): its callback is verified once, where an unrolled
	 * 1 KiB scan exceeds the verifier's budget. A continuation read may
	 * start with the header itself. */
	{
		struct scan_ctx c = {.s = s, .n = n, .read_index = read_index, .tp_at = -1};

		bpf_loop(ISO_SCAN_BYTES, scan_step, &c, 0);
		tp_at = c.tp_at;
		flags = c.flags;
		head_end = c.head_end;
	}

	if (tp_at >= 0) {
		struct iso_rec_traceparent *rec;
		const char *v;
		int at = tp_at, j;
		bool bad = false;

		/* Optional white space after the colon. */
		if (at < ISO_SCAN_BYTES && s->buf[at & (ISO_SCAN_BYTES - 1)] == ' ')
			at++;
		if (at + ISO_TP_VALUE_LEN > n) {
			/* Split across reads: the next read is scanned anew. */
			iso_percpu_inc(&stats, ISO_STAT_TRACEPARENT_BAD);
			goto out;
		}
		v = &s->buf[at & (ISO_SCAN_BYTES - 1)];
		rec = bpf_ringbuf_reserve(&events, sizeof(*rec), 0);
		if (!rec) {
			iso_percpu_inc(&stats, ISO_STAT_RB_RESERVE_FAILED);
			goto out;
		}
		{
			/* Plain loops, not unrolled: unrolled, the 50 lookups spill to
			 * ~480 bytes of stack, and main + bpf_loop callback must fit
			 * 512 bytes on older kernels (6.1). */
			__u8 acc = 0;

#pragma clang loop unroll(disable)
			for (j = 0; j < 16; j++) {
				__u8 hi = hexval(v[3 + 2 * j]), lo = hexval(v[4 + 2 * j]);

				acc |= hi | lo;
				rec->trace_id[j] = (__u8)((hi << 4) | (lo & 0xf));
			}
#pragma clang loop unroll(disable)
			for (j = 0; j < 8; j++) {
				__u8 hi = hexval(v[36 + 2 * j]), lo = hexval(v[37 + 2 * j]);

				acc |= hi | lo;
				rec->parent_span_id[j] = (__u8)((hi << 4) | (lo & 0xf));
			}
			{
				__u8 hi = hexval(v[53]), lo = hexval(v[54]);

				acc |= hi | lo;
				rec->trace_flags = (__u8)((hi << 4) | (lo & 0xf));
			}
			acc |= hexval(v[0]) | hexval(v[1]);
			/* Version ff is invalid; dashes in place. */
			bad = (acc & 0x10) || (v[0] == 'f' && v[1] == 'f') || v[2] != '-' ||
			      v[35] != '-' || v[52] != '-';
		}
		if (bad) {
			bpf_ringbuf_discard(rec, 0);
			iso_percpu_inc(&stats, ISO_STAT_TRACEPARENT_BAD);
			goto out;
		}
		{
			struct task_struct *t = task;

			rec->hdr.kind = ISO_REC_TRACEPARENT;
			rec->hdr.size = sizeof(*rec);
			rec->hdr.abi_version = ISO_ABI_VERSION;
			rec->hdr.flags = 0;
			rec->hdr.tgid = id >> 32;
			rec->hdr.tid = (__u32)id;
			rec->hdr.ts_ns = bpf_ktime_get_boot_ns();
			iso_task_cgroup_ids(t, &rec->hdr.cgroup_v2_id, &rec->hdr.cgroup_v1_cpu_id);
		}
		rec->sock = key;
		rec->family = BPF_CORE_READ(sk, __sk_common.skc_family);
		__builtin_memset(rec->saddr, 0, sizeof(rec->saddr));
		__builtin_memset(rec->daddr, 0, sizeof(rec->daddr));
		if (rec->family == ISO_AF_INET6) {
			BPF_CORE_READ_INTO(&rec->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
			BPF_CORE_READ_INTO(&rec->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
		} else {
			BPF_CORE_READ_INTO((__u32 *)rec->saddr, sk, __sk_common.skc_rcv_saddr);
			BPF_CORE_READ_INTO((__u32 *)rec->daddr, sk, __sk_common.skc_daddr);
		}
		rec->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
		rec->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
		rec->flags = flags | (read_index > 0 ? ISO_TP_F_LATER_READ : 0);
		rec->fd = fd;
		rec->read_index = read_index;
		bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
		head_end = true; /* done with this request */
	}
out:
	if (head_end || read_index + 1 >= max_head_reads) {
		if (reads)
			bpf_map_delete_elem(&http_heads, &key);
	} else {
		__u32 next = read_index + 1;

		bpf_map_update_elem(&http_heads, &key, &next, BPF_ANY);
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_read")
int iso_read_exit(struct sys_exit_args *ctx) { return on_exit(ctx->ret); }
SEC("tracepoint/syscalls/sys_exit_recvfrom")
int iso_recvfrom_exit(struct sys_exit_args *ctx) { return on_exit(ctx->ret); }
