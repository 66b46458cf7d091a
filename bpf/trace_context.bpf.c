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
 * Outbound: on write()/writev()/sendto()/sendmsg() to a socket whose buffer
 * starts with an HTTP method, the same scan runs over the written head and a
 * record with ISO_TP_F_OUTBOUND leaves (the header's parent-id is then the
 * sender's own span id). Only the first write of a request head is scanned.
 *
 * Network: the read exit also closes the socket's receive-queue wait (RCVQ,
 * docs/network.md), opened by tcp_probe in network.bpf.c.
 *
 * Linked with container.bpf.c and network.bpf.c into one object (bpftool gen
 * object); the ring buffer, the stats array and filter_tgid are defined in
 * container.bpf.c, the rcvq map, host_netns_ino and the net_* settings in
 * network.bpf.c.
 */
#define __ISOSCOPE_BPF__ 1
#include "isoscope/kernel_types.h"
#include "isoscope/core_fixes.bpf.h"
#include "isoscope/task.bpf.h"
#include "isoscope/abi.h"
#include "isoscope/maps.bpf.h"
#include "isoscope/record.bpf.h"
#include "isoscope/traceparent.bpf.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#define ISO_SCAN_BYTES 1024

extern const volatile __u32 filter_tgid;
extern const volatile __u64 net_min_ns;
extern const volatile __u32 host_netns_ino;
extern const volatile bool net_enabled;
const volatile __u32 max_head_reads = 4;

extern ISO_EVENTS_MAP;
extern ISO_STATS_MAP;

/* Defined in network.bpf.c. */
extern ISO_RCVQ_MAP;

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

/* Do the len bytes of user memory at buf start with a request method? Four
 * bytes decide, before a socket walk or the 1 KiB copy. */
static __always_inline bool user_starts_request(__u64 buf, __s64 len)
{
	char m[4];

	return len >= 4 && !bpf_probe_read_user(m, sizeof(m), (void *)buf) && is_method(m);
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

/* The struct sock behind fd when it is a socket, else NULL. */
static __always_inline struct sock *fd_sock(struct task_struct *task, __u32 fd)
{
	struct file *f = fd_file(task, fd);
	struct socket *sock;

	/* f came from a probe read (an untyped scalar), so probe reads from here. */
	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & ISO_S_IFMT) != ISO_S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(sock, sk);
}

/*
 * RCVQ: this read took data that tcp_probe (network.bpf.c) saw arrive while
 * the socket had none unread. The interval [arrival, end of this read) is the
 * time the data waited in the receive queue. Runs before the HTTP checks,
 * for every socket read. A partial read leaves data behind: its wait starts
 * again now (it arrived earlier, so this undercounts and never counts a
 * moment twice).
 */
static __always_inline void rcvq_close(struct sock *sk, __u64 key, __s64 ret, __u64 id,
				       struct task_struct *task)
{
	struct iso_rec_net *r;
	__u64 *ts, start, now;

	if (!net_enabled)
		return;
	ts = bpf_map_lookup_elem(&rcvq, &key);
	if (!ts)
		return;
	start = *ts;
	now = bpf_ktime_get_boot_ns();
	{
		/* Only TCP sockets have an entry (tcp_probe made it). */
		const struct tcp_sock *tp = (const void *)sk;

		if (BPF_CORE_READ(tp, copied_seq) != BPF_CORE_READ(tp, rcv_nxt))
			*ts = now;
		else
			bpf_map_delete_elem(&rcvq, &key);
	}
	if (now <= start || now - start < net_min_ns)
		return;
	r = iso_reserve(&events, &stats, sizeof(*r));
	if (!r)
		return;
	__builtin_memset(r, 0, sizeof(*r));
	iso_fill_task_hdr(&r->hdr, ISO_REC_NET, sizeof(*r), id, task, now);
	r->start_ns = start;
	r->sock = key;
	iso_sock_addrs(sk, &r->family, r->saddr, r->daddr, &r->sport, &r->dport);
	r->event = ISO_NET_EV_RCVQ;
	r->mech = ISO_NET_QUEUE;
	r->netns_ino = iso_sock_netns(sk);
	r->bytes = ret > 0xffffffffll ? 0xffffffffu : (__u32)ret;
	r->flags = ISO_NET_F_SOCK | ISO_NET_F_TASK;
	iso_mark_host_netns(r, &host_netns_ino);
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
}

/* Scans the first n bytes of s for the head's traceparent / tracestate and
 * its end, with bpf_loop (v5.17+): its callback is verified once, where an
 * unrolled 1 KiB scan exceeds the verifier's budget. A continuation read
 * (read_index > 0) may start with the header itself. */
static __always_inline void scan_head(struct scan_ctx *c)
{
	bpf_loop(ISO_SCAN_BYTES, scan_step, c, 0);
}

/*
 * Emits the traceparent at c->tp_at (a header found by scan_head). Returns
 * false when the value is cut off by the end of the buffer or invalid
 * (counted in ISO_STAT_TRACEPARENT_BAD).
 */
static __always_inline bool emit_traceparent(struct scan_ctx *c, __u64 id, struct task_struct *task,
					     struct sock *sk, __u64 key, __u32 fd, __u8 flags)
{
	struct scratch *s = c->s;
	struct iso_rec_traceparent *rec;
	int at = c->tp_at;

	/* Optional white space after the colon. */
	if (at < ISO_SCAN_BYTES && s->buf[at & (ISO_SCAN_BYTES - 1)] == ' ')
		at++;
	if (at + ISO_TP_VALUE_LEN > c->n) {
		/* Split across reads: the next read is scanned anew. */
		iso_percpu_inc(&stats, ISO_STAT_TRACEPARENT_BAD);
		return false;
	}
	rec = iso_reserve(&events, &stats, sizeof(*rec));
	if (!rec)
		return false;
	if (!iso_tp_parse(&s->buf[at & (ISO_SCAN_BYTES - 1)], rec->trace_id, rec->parent_span_id,
			  &rec->trace_flags)) {
		bpf_ringbuf_discard(rec, 0);
		iso_percpu_inc(&stats, ISO_STAT_TRACEPARENT_BAD);
		return false;
	}
	iso_fill_task_hdr(&rec->hdr, ISO_REC_TRACEPARENT, sizeof(*rec), id, task,
			  bpf_ktime_get_boot_ns());
	rec->sock = key;
	__builtin_memset(rec->saddr, 0, sizeof(rec->saddr));
	__builtin_memset(rec->daddr, 0, sizeof(rec->daddr));
	iso_sock_addrs(sk, &rec->family, rec->saddr, rec->daddr, &rec->sport, &rec->dport);
	rec->flags = c->flags | flags;
	rec->fd = fd;
	rec->read_index = c->read_index;
	bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
	return true;
}

/* Copies up to ISO_SCAN_BYTES of the user buffer into the scratch; returns
 * the byte count, 0 on failure. */
static __always_inline int load_user(struct scratch *s, __u64 buf, __s64 len)
{
	int n = len < ISO_SCAN_BYTES ? (int)len : ISO_SCAN_BYTES;

	if (n <= 0)
		return 0;
	if (bpf_probe_read_user(s->buf, n & (ISO_SCAN_BYTES - 1) ? n & (ISO_SCAN_BYTES - 1) : ISO_SCAN_BYTES,
				(void *)buf))
		return 0;
	return n;
}

static __always_inline int on_exit(__s64 ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct task_struct *task;
	struct pt_regs *regs;
	__u32 fd;
	__u64 buf;
	struct scratch *s;
	struct sock *sk;
	__u32 zero = 0, *reads, read_index = 0;
	__u64 key;
	int n;
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
	sk = fd_sock(task, fd);
	/* TCP only: receive-queue waits are timed on TCP sockets, and HTTP/1.x
	 * runs over TCP. A UDP datagram read stops here. */
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != ISO_IPPROTO_TCP)
		return 0;
	key = (__u64)(unsigned long)sk;
	rcvq_close(sk, key, ret, id, task);

	/* A read that continues no request head and does not start one (most
	 * reads: bodies, bulk data) stops here. */
	reads = bpf_map_lookup_elem(&http_heads, &key);
	if (reads)
		read_index = *reads;
	else if (!user_starts_request(buf, ret))
		return 0;
	s = bpf_map_lookup_elem(&http_scratch, &zero);
	if (!s)
		return 0;
	n = load_user(s, buf, ret);
	if (!n)
		return 0;
	iso_percpu_inc(&stats, ISO_STAT_HTTP_HEADS);

	{
		struct scan_ctx c = {.s = s, .n = n, .read_index = read_index, .tp_at = -1};

		scan_head(&c);
		head_end = c.head_end;
		if (c.tp_at >= 0 &&
		    emit_traceparent(&c, id, task, sk, key, fd, read_index > 0 ? ISO_TP_F_LATER_READ : 0))
			head_end = true; /* done with this request */
	}
	if (head_end || read_index + 1 >= max_head_reads) {
		if (reads)
			bpf_map_delete_elem(&http_heads, &key);
	} else {
		__u32 next = read_index + 1;

		bpf_map_update_elem(&http_heads, &key, &next, BPF_ANY);
	}
	return 0;
}

/* Outbound: a write of len bytes from the user buffer buf on fd. */
static __always_inline int on_write(__s64 ret, __u32 fd, __u64 buf, __s64 len)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct task_struct *task;
	struct scratch *s;
	struct sock *sk;
	__u32 zero = 0;
	int n;

	if (ret <= 0 || (filter_tgid && (id >> 32) != filter_tgid))
		return 0;
	/* Most writes are not request heads. */
	if (ret < 4 || !user_starts_request(buf, len))
		return 0;
	task = bpf_get_current_task_btf();
	sk = fd_sock(task, fd);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != ISO_IPPROTO_TCP)
		return 0;
	s = bpf_map_lookup_elem(&http_scratch, &zero);
	if (!s)
		return 0;
	n = load_user(s, buf, len < ret ? len : ret);
	if (n < 4)
		return 0;
	{
		struct scan_ctx c = {.s = s, .n = n, .read_index = 0, .tp_at = -1};

		scan_head(&c);
		if (c.tp_at >= 0)
			emit_traceparent(&c, id, task, sk, (__u64)(unsigned long)sk, fd, ISO_TP_F_OUTBOUND);
	}
	return 0;
}

/* The first element of a user iovec array: struct iovec { void *base; size_t len; }. */
static __always_inline int first_iov(__u64 iov, __u64 *base, __s64 *len)
{
	__u64 v[2];

	if (!iov || bpf_probe_read_user(v, sizeof(v), (void *)iov))
		return -1;
	*base = v[0];
	*len = (__s64)v[1];
	return 0;
}

static __always_inline struct pt_regs *user_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

SEC("tracepoint/syscalls/sys_exit_read")
int iso_read_exit(struct sys_exit_args *ctx) { return on_exit(ctx->ret); }
SEC("tracepoint/syscalls/sys_exit_recvfrom")
int iso_recvfrom_exit(struct sys_exit_args *ctx) { return on_exit(ctx->ret); }

/* write(fd, buf, n) and sendto(fd, buf, n, ...): the buffer is in si. */
SEC("tracepoint/syscalls/sys_exit_write")
int iso_write_exit(struct sys_exit_args *ctx)
{
	struct pt_regs *regs;

	if (ctx->ret <= 0)
		return 0;
	regs = user_regs();
	return on_write(ctx->ret, (__u32)regs->di, regs->si, ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_sendto")
int iso_sendto_exit(struct sys_exit_args *ctx)
{
	struct pt_regs *regs;

	if (ctx->ret <= 0)
		return 0;
	regs = user_regs();
	return on_write(ctx->ret, (__u32)regs->di, regs->si, ctx->ret);
}

/* writev(fd, iov, cnt): only iov[0] is scanned (the head is written first). */
SEC("tracepoint/syscalls/sys_exit_writev")
int iso_writev_exit(struct sys_exit_args *ctx)
{
	struct pt_regs *regs;
	__u64 base;
	__s64 len;

	if (ctx->ret <= 0)
		return 0;
	regs = user_regs();
	if (first_iov(regs->si, &base, &len))
		return 0;
	return on_write(ctx->ret, (__u32)regs->di, base, len);
}

/* sendmsg(fd, msg, flags): struct user_msghdr has msg_iov at offset 16. */
SEC("tracepoint/syscalls/sys_exit_sendmsg")
int iso_sendmsg_exit(struct sys_exit_args *ctx)
{
	struct pt_regs *regs;
	__u64 iov = 0, base;
	__s64 len;

	if (ctx->ret <= 0)
		return 0;
	regs = user_regs();
	if (!regs->si || bpf_probe_read_user(&iov, sizeof(iov), (void *)(regs->si + 16)))
		return 0;
	if (first_iov(iov, &base, &len))
		return 0;
	return on_write(ctx->ret, (__u32)regs->di, base, len);
}
