/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Network slices, kernel side (docs/network.md): emits ISO_REC_NET intervals
 * that a packet or a socket's data spent in one stage on this node.
 *
 *   QDISC    qdisc_enqueue -> qdisc_dequeue (same skb); on kernels before
 *            v5.15 net_dev_queue -> net_dev_start_xmit (rodata qdisc_tp = 0)
 *   BACKLOG  net_dev_start_xmit on a veth -> netif_receive_skb (same skb)
 *   RCVQ     tcp_probe (first unread data) -> the read exit
 *            (bpf/trace_context.bpf.c)
 *   RETRANS  tcp_retransmit_skb (the wait before it: RTO or ~1 RTT)
 *   DROP     kfree_skb with a drop reason
 *   DEVQ     net_dev_start_xmit on a virtio_net NIC -> consume_skb (TX
 *            completion: the driver took the buffer back from the device)
 *   ZWND     tcp_probe: the peer announces a zero window -> announces one
 *            again (the sender's stall)
 *
 * Per-packet fast path. The qdisc tracepoints fire only for devices with a
 * real qdisc (a noqueue veth or lo never enqueues): one map update keyed by
 * the skb address at enqueue, one lookup plus a delete at dequeue. On the
 * fallback, net_dev_queue runs for every packet and returns after two pointer
 * loads on a noqueue device; start_xmit then does the lookup. A veth's
 * start_xmit stores the hand-over time (one update) and the peer's
 * netif_receive_skb does one lookup plus a delete; any other device's
 * receive returns after the same pointer compare. Headers are parsed only
 * for the records that leave the kernel (intervals >= net_min_ns, drops),
 * with probe reads, so the same bodies serve tp_btf and raw_tp.
 *
 * Linked with container.bpf.c and trace_context.bpf.c into one object
 * (bpftool gen object); `events` and `stats` are defined in container.bpf.c;
 * `rcvq`, net_min_ns, host_netns_ino and net_enabled are defined here and
 * declared extern in trace_context.bpf.c (which closes RCVQ intervals on the
 * read exit).
 */
#define __ISOSCOPE_BPF__ 1
#include "isoscope/kernel_types.h"
#include "isoscope/core_fixes.bpf.h"
#include "isoscope/task.bpf.h"
#include "isoscope/abi.h"
#include "isoscope/maps.bpf.h"
#include "isoscope/record.bpf.h"
#include "isoscope/hook.bpf.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/* Settings, fixed before load (agent/loader.cpp). */
const volatile __u64 net_min_ns = 1000000; /* emit intervals at least this long */
const volatile __u32 host_netns_ino = 0;   /* the agent's /proc/self/ns/net inode */
const volatile bool net_enabled = true;
/* 1: the qdisc is timed by qdisc_enqueue/qdisc_dequeue; 0: by net_dev_queue and
 * net_dev_start_xmit (kernels before v5.15). Set by the loader from the
 * program plan. */
const volatile bool qdisc_tp = true;
/* The kernel's CONFIG_HZ (icsk_rto is in jiffies), from the kernel config in
 * user space; 0: unknown, taken as 250 (the default of most distributions).
 * Not a __kconfig extern: libbpf 1.1 fails the whole object when the kernel
 * config cannot be read (no /proc/config.gz, as on Debian's 6.1), even for a
 * __weak extern. */
const volatile __u32 kernel_hz = 0;
/* Paravirtual NICs (driver virtio_net) of the host netns by ifindex, from
 * /sys/class/net/<dev>/device/driver (collectors/network/net_devices.cpp);
 * 0: unused slot. Only the first such device to transmit is compared by
 * ifindex: its netdev_ops then identify every device of the driver by one
 * pointer. */
#define ISO_NET_PARAVIRT_DEVS 8
const volatile __u32 paravirt_ifindex[ISO_NET_PARAVIRT_DEVS] = {};

/* An skb stage older than this is a leftover (an skb freed in between whose
 * address came back), not a measurement. */
#define ISO_NET_STALE_NS (10ull * 1000000000ull)
/* DROP records per CPU per second at most; every drop is still counted in
 * drop_reasons. */
#define ISO_NET_DROP_RECS_PER_SEC 1000
#define ISO_NET_DROP_REASONS 256
/* IPv6 extension headers walked to find the ports, and their numbers. */
#define ISO_NET_IPV6_EXT 4
#define ISO_IPV6_HOPOPTS 0
#define ISO_IPV6_ROUTING 43
#define ISO_IPV6_FRAGMENT 44
#define ISO_IPV6_DSTOPTS 60

extern ISO_EVENTS_MAP;
extern ISO_STATS_MAP;

enum {
	ISO_SKB_STAGE_QDISC = 1,   /* queued on a device, waiting for the driver */
	ISO_SKB_STAGE_DEVQ = 2,    /* handed to a paravirtual device, not completed */
};

struct skb_stage {
	__u64 ts;
	__u32 stage;
	__u32 pad;
};

/* skb address -> the stage it entered and when. An LRU hash (preallocated,
 * like every LRU map: updates from softirq context must not allocate): an
 * skb can leave without the hook that would delete its entry (a GSO skb
 * segmented after its qdisc, an skb consumed on another path), and the LRU
 * evicts such leftovers instead of letting them fill the map.
 * ISO_STAT_NET_SKB_FULL counts updates that failed all the same. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct skb_stage);
} skb_ts SEC(".maps");

/* The veth hand-over, per CPU: a veth's start_xmit queues the skb on this
 * CPU's backlog (netif_rx; or the peer's NAPI, scheduled here too), and this
 * CPU's softirq receives it in order. A small ring of (skb, time) per CPU
 * replaces a hash update and a lookup + delete per packet; a receive on
 * another CPU (RPS) finds nothing and is not timed. */
#define ISO_HANDOVER_SLOTS 32
struct handover_ring {
	__u64 skb[ISO_HANDOVER_SLOTS];
	__u64 ts[ISO_HANDOVER_SLOTS];
	__u32 head;
	__u32 pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct handover_ring);
} handover SEC(".maps");

/* struct sock address -> boot ns when the first not-yet-read data arrived
 * (tcp_probe). Closed by the socket read exit in trace_context.bpf.c. */
ISO_RCVQ_MAP;

/* struct sock address -> boot ns when the peer announced a zero window. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} zwnd SEC(".maps");

/* Drops per kernel drop reason (enum skb_drop_reason; reasons >= 255 count in
 * slot 255). User space sums the CPUs (Probes::ReadDropReasons). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ISO_NET_DROP_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} drop_reasons SEC(".maps");

struct drop_limit {
	__u64 window; /* boot second of the current window */
	__u64 count;  /* records emitted in it */
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drop_limit);
} drop_limit SEC(".maps");

/* The veth driver's rtnl_link_ops and the noqueue qdisc's Qdisc_ops, each
 * learnt from the first device that shows it (by its name string): later
 * checks compare one pointer. */
__u64 veth_ops = 0;
__u64 noqueue_ops = 0;
/* The netdev_ops of the paravirtual NICs' driver, learnt from the first
 * device listed in paravirt_ifindex that transmits. */
__u64 paravirt_ops = 0;

enum skb_drop_reason {
	SKB_CONSUMED = 1,
	SKB_DROP_REASON_NOT_SPECIFIED = 2,
};

static __always_inline bool kind_is_veth(const char *k)
{
	return k[0] == 'v' && k[1] == 'e' && k[2] == 't' && k[3] == 'h' && k[4] == 0;
}

/* Is dev a veth? One pointer compare once the veth ops are known. */
static __always_inline bool dev_is_veth(const struct net_device *dev, bool btf)
{
	const struct rtnl_link_ops *ops;
	char kind[8] = {};

	if (!dev)
		return false;
	ops = ISO_RD(btf, dev, rtnl_link_ops);
	if (!ops)
		return false;
	if ((__u64)(unsigned long)ops == veth_ops)
		return true;
	if (veth_ops)
		return false; /* known, and not this one */
	bpf_probe_read_kernel_str(kind, sizeof(kind), BPF_CORE_READ(ops, kind));
	if (!kind_is_veth(kind))
		return false;
	veth_ops = (__u64)(unsigned long)ops;
	return true;
}

/* Is dev a paravirtual NIC (virtio_net)? One pointer compare once learnt;
 * until then a device of the host netns listed in paravirt_ifindex teaches
 * it. With no such device listed the verifier drops the whole check (rodata
 * is frozen). */
static __always_inline bool dev_is_paravirt(const struct net_device *dev, bool btf)
{
	__u64 ops;
	__u32 ifindex;

	if (!dev || !paravirt_ifindex[0])
		return false;
	ops = (__u64)(unsigned long)ISO_RD(btf, dev, netdev_ops);
	if (!ops)
		return false;
	if (ops == paravirt_ops)
		return true;
	if (paravirt_ops)
		return false;
	ifindex = ISO_RD(btf, dev, ifindex);
#pragma unroll
	for (int i = 0; i < ISO_NET_PARAVIRT_DEVS; i++) {
		if (!paravirt_ifindex[i])
			break;
		if (paravirt_ifindex[i] != ifindex)
			continue;
		if (BPF_CORE_READ(dev, nd_net.net, ns.inum) != host_netns_ino)
			return false;
		paravirt_ops = ops;
		return true;
	}
	return false;
}

/* Is dev's root qdisc noqueue (nothing is ever queued on it)? */
static __always_inline bool dev_noqueue(const struct net_device *dev, bool btf)
{
	const struct Qdisc *q;
	const struct Qdisc_ops *ops;
	char id[8] = {};

	if (!dev)
		return true;
	q = ISO_RD(btf, dev, qdisc);
	if (!q)
		return true;
	ops = ISO_RD(btf, q, ops);
	if ((__u64)(unsigned long)ops == noqueue_ops)
		return true;
	if (noqueue_ops || !ops)
		return false;
	bpf_probe_read_kernel_str(id, sizeof(id), &ops->id);
	if (!(id[0] == 'n' && id[1] == 'o' && id[2] == 'q' && id[3] == 'u' && id[4] == 'e' &&
	      id[5] == 'u' && id[6] == 'e' && id[7] == 0))
		return false;
	noqueue_ops = (__u64)(unsigned long)ops;
	return true;
}

/* Device fields of a packet record; dev may be NULL. */
static __always_inline void fill_dev(struct iso_rec_net *r, const struct net_device *dev)
{
	const struct rtnl_link_ops *ops;

	if (!dev)
		return;
	r->ifindex = BPF_CORE_READ(dev, ifindex);
	r->netns_ino = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	BPF_CORE_READ_STR_INTO(&r->dev_name, dev, name);
	ops = BPF_CORE_READ(dev, rtnl_link_ops);
	if (ops)
		bpf_probe_read_kernel_str(r->dev_kind, sizeof(r->dev_kind), BPF_CORE_READ(ops, kind));
	iso_mark_host_netns(r, &host_netns_ino);
}

/*
 * Addresses and ports from the packet's own headers (a forwarded skb has no
 * socket): IPv4 (options skipped by ihl) or IPv6 (fixed header, then up to
 * ISO_NET_IPV6_EXT extension headers), then TCP/UDP ports unless a later
 * fragment.
 * Returns the L4 protocol, 0 when the packet is not IP.
 */
static __always_inline __u8 parse_pkt(struct iso_rec_net *r, const struct sk_buff *skb)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 proto = __builtin_bswap16(BPF_CORE_READ(skb, protocol));
	unsigned char *l3, *l4;
	__u8 l4proto;
	__u16 ports[2];

	if (!head)
		return 0;
	if (nh == (__u16)~0u) /* not set yet: the data pointer is at L3 on receive */
		l3 = BPF_CORE_READ(skb, data);
	else
		l3 = head + nh;
	if (proto == ISO_ETH_P_IP) {
		__u8 iph[20];

		if (bpf_probe_read_kernel(iph, sizeof(iph), l3) || (iph[0] >> 4) != 4)
			return 0;
		r->family = ISO_AF_INET;
		__builtin_memcpy(r->saddr, &iph[12], 4);
		__builtin_memcpy(r->daddr, &iph[16], 4);
		l4proto = iph[9];
		if ((iph[6] & 0x1f) | iph[7]) /* a later fragment: no ports */
			return l4proto;
		l4 = l3 + (iph[0] & 0xf) * 4;
	} else if (proto == ISO_ETH_P_IPV6) {
		__u8 ip6h[40];

		if (bpf_probe_read_kernel(ip6h, sizeof(ip6h), l3) || (ip6h[0] >> 4) != 6)
			return 0;
		r->family = ISO_AF_INET6;
		__builtin_memcpy(r->saddr, &ip6h[8], 16);
		__builtin_memcpy(r->daddr, &ip6h[24], 16);
		l4proto = ip6h[6];
		l4 = l3 + 40;
		/* Extension headers before the transport header, at most
		 * ISO_NET_IPV6_EXT: hop-by-hop, routing and destination options
		 * ((len + 1) * 8 bytes), fragment (8 bytes; a later fragment has no
		 * ports). */
#pragma unroll
		for (int i = 0; i < ISO_NET_IPV6_EXT; i++) {
			__u8 ext[4];

			if (l4proto != ISO_IPV6_HOPOPTS && l4proto != ISO_IPV6_ROUTING &&
			    l4proto != ISO_IPV6_FRAGMENT && l4proto != ISO_IPV6_DSTOPTS)
				break;
			if (bpf_probe_read_kernel(ext, sizeof(ext), l4))
				return 0;
			if (l4proto == ISO_IPV6_FRAGMENT) {
				l4proto = ext[0];
				if ((((__u16)ext[2] << 8) | ext[3]) & 0xfff8)
					return l4proto;
				l4 += 8;
			} else {
				l4proto = ext[0];
				l4 += ((__u32)ext[1] + 1) * 8;
			}
		}
	} else {
		return 0;
	}
	if (l4proto == ISO_IPPROTO_TCP || l4proto == ISO_IPPROTO_UDP) {
		if (bpf_probe_read_kernel(ports, sizeof(ports), l4) == 0) {
			r->sport = __builtin_bswap16(ports[0]);
			r->dport = __builtin_bswap16(ports[1]);
		}
	}
	return l4proto;
}

/* Emits one packet record [start, now) on dev (NULL: skb->dev). */
static __always_inline void emit_skb(__u8 event, __u8 mech, const struct sk_buff *skb,
				     const struct net_device *dev, __u64 start, __u64 now)
{
	struct iso_rec_net *r = iso_reserve(&events, &stats, sizeof(*r));

	if (!r)
		return;
	__builtin_memset(r, 0, sizeof(*r));
	iso_fill_hdr(&r->hdr, ISO_REC_NET, sizeof(*r), 0, 0, now, 0, 0);
	r->start_ns = start;
	r->event = event;
	r->mech = mech;
	r->bytes = BPF_CORE_READ(skb, len);
	if (!dev)
		dev = BPF_CORE_READ(skb, dev);
	fill_dev(r, dev);
	parse_pkt(r, skb);
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
}

static __always_inline void on_dev_queue(const struct sk_buff *skb, bool btf)
{
	__u64 key = (__u64)(unsigned long)skb;
	struct skb_stage v = {};

	if (!net_enabled || qdisc_tp || dev_noqueue(ISO_RD(btf, skb, dev), btf))
		return;
	v.ts = bpf_ktime_get_boot_ns();
	v.stage = ISO_SKB_STAGE_QDISC;
	if (bpf_map_update_elem(&skb_ts, &key, &v, BPF_ANY))
		iso_percpu_inc(&stats, ISO_STAT_NET_SKB_FULL);
}

static __always_inline void on_start_xmit(const struct sk_buff *skb, const struct net_device *dev,
					  bool btf)
{
	__u64 key = (__u64)(unsigned long)skb;
	__u64 now = 0;

	if (!net_enabled)
		return;
	if (!qdisc_tp && !dev_noqueue(dev, btf)) {
		/* Fallback: the qdisc stage net_dev_queue opened ends here. */
		struct skb_stage *v = bpf_map_lookup_elem(&skb_ts, &key);

		if (v) {
			now = bpf_ktime_get_boot_ns();
			if (v->stage == ISO_SKB_STAGE_QDISC && now > v->ts &&
			    now - v->ts >= net_min_ns && now - v->ts < ISO_NET_STALE_NS)
				emit_skb(ISO_NET_EV_QDISC, ISO_NET_QUEUE, skb, dev, v->ts, now);
			bpf_map_delete_elem(&skb_ts, &key);
		}
	}
	/* veth first: the common device of a Kubernetes node, never paravirtual. */
	if (!dev_is_veth(dev, btf)) {
		if (dev_is_paravirt(dev, btf)) {
			/* Into the device's ring: timed until the driver
			 * completes it (on_consume_skb). */
			struct skb_stage nv = {.ts = now ? now : bpf_ktime_get_boot_ns(),
					       .stage = ISO_SKB_STAGE_DEVQ};

			if (bpf_map_update_elem(&skb_ts, &key, &nv, BPF_ANY))
				iso_percpu_inc(&stats, ISO_STAT_NET_SKB_FULL);
		}
		return;
	}
	/* The peer receives this very skb in this CPU's softirq: time that wait. */
	{
		__u32 zero = 0, i;
		struct handover_ring *ring = bpf_map_lookup_elem(&handover, &zero);

		if (!ring)
			return;
		i = ring->head++ & (ISO_HANDOVER_SLOTS - 1);
		ring->skb[i] = key;
		ring->ts[i] = now ? now : bpf_ktime_get_boot_ns();
	}
}

/* The qdisc tracepoints: the root qdisc of a device took the skb
 * (dev_qdisc_enqueue; not fired for the empty-queue bypass, where nothing
 * waits) and gave it out (dequeue_skb). A bulk dequeue hands out a list
 * linked by skb->next: its first ISO_NET_DEQUEUE_BULK skbs are closed. */
#define ISO_NET_DEQUEUE_BULK 8

static __always_inline void on_qdisc_enqueue(const struct sk_buff *skb)
{
	__u64 key = (__u64)(unsigned long)skb;
	struct skb_stage v = {};

	if (!net_enabled || !qdisc_tp || !skb)
		return;
	v.ts = bpf_ktime_get_boot_ns();
	v.stage = ISO_SKB_STAGE_QDISC;
	if (bpf_map_update_elem(&skb_ts, &key, &v, BPF_ANY))
		iso_percpu_inc(&stats, ISO_STAT_NET_SKB_FULL);
}

static __always_inline void on_qdisc_dequeue(const struct sk_buff *skb, int packets, bool btf)
{
	__u64 now = 0;

	if (!net_enabled || !qdisc_tp)
		return;
#pragma unroll
	for (int i = 0; i < ISO_NET_DEQUEUE_BULK; i++) {
		__u64 key = (__u64)(unsigned long)skb;
		struct skb_stage *v;

		if (!skb || i >= packets)
			break;
		v = bpf_map_lookup_elem(&skb_ts, &key);
		if (v) {
			if (!now)
				now = bpf_ktime_get_boot_ns();
			if (v->stage == ISO_SKB_STAGE_QDISC && now > v->ts &&
			    now - v->ts >= net_min_ns && now - v->ts < ISO_NET_STALE_NS)
				emit_skb(ISO_NET_EV_QDISC, ISO_NET_QUEUE, skb, NULL, v->ts, now);
			bpf_map_delete_elem(&skb_ts, &key);
		}
		skb = ISO_RD(btf, skb, next);
	}
}

static __always_inline void on_receive(const struct sk_buff *skb, bool btf)
{
	__u64 key = (__u64)(unsigned long)skb;
	__u64 now, start;
	__u32 zero = 0;
	struct handover_ring *ring;

	/* Only a veth peer receives skbs timed at start_xmit. */
	if (!net_enabled || !dev_is_veth(ISO_RD(btf, skb, dev), btf))
		return;
	ring = bpf_map_lookup_elem(&handover, &zero);
	if (!ring)
		return;
	start = 0;
	/* Newest first: the peer usually receives the skb this CPU sent last. */
	{
		__u32 head = ring->head;

#pragma unroll
		for (int i = 1; i <= ISO_HANDOVER_SLOTS; i++) {
			__u32 j = (head - i) & (ISO_HANDOVER_SLOTS - 1);

			if (ring->skb[j] == key) {
				start = ring->ts[j];
				ring->skb[j] = 0;
				break;
			}
		}
	}
	if (!start)
		return;
	now = bpf_ktime_get_boot_ns();
	if (now > start && now - start >= net_min_ns && now - start < ISO_NET_STALE_NS)
		emit_skb(ISO_NET_EV_BACKLOG, ISO_NET_SCHEDULING, skb, NULL, start, now);
}

/*
 * TX completion on a paravirtual NIC: the driver frees the skb it handed to
 * the device (virtio_net's free_old_xmit -> napi_consume_skb/consume_skb)
 * once the host has taken the buffer. Every consumed skb of the node passes
 * here: a packet not sent through such a device costs two pointer loads and
 * a compare (skb->dev->netdev_ops); the program is not even loaded on a node
 * without one (agent/loader.cpp).
 */
static __always_inline void on_consume_skb(const struct sk_buff *skb, bool btf)
{
	__u64 key = (__u64)(unsigned long)skb;
	const struct net_device *dev;
	struct skb_stage *v;
	__u64 now;

	if (!net_enabled || !paravirt_ops || !skb)
		return;
	dev = ISO_RD(btf, skb, dev);
	if (!dev || (__u64)(unsigned long)ISO_RD(btf, dev, netdev_ops) != paravirt_ops)
		return;
	v = bpf_map_lookup_elem(&skb_ts, &key);
	if (!v)
		return;
	if (v->stage == ISO_SKB_STAGE_DEVQ) {
		now = bpf_ktime_get_boot_ns();
		if (now > v->ts && now - v->ts >= net_min_ns && now - v->ts < ISO_NET_STALE_NS)
			emit_skb(ISO_NET_EV_DEVQ, ISO_NET_QUEUE, skb, dev, v->ts, now);
	}
	bpf_map_delete_elem(&skb_ts, &key);
}

/* Socket fields of a socket record (RETRANS, ZWND; trace_context.bpf.c fills
 * RCVQ the same way). */
static __always_inline void fill_sock(struct iso_rec_net *r, const struct sock *sk)
{
	r->sock = (__u64)(unsigned long)sk;
	iso_sock_addrs(sk, &r->family, r->saddr, r->daddr, &r->sport, &r->dport);
	r->netns_ino = iso_sock_netns(sk);
	r->flags = ISO_NET_F_SOCK;
	iso_mark_host_netns(r, &host_netns_ino);
}

/*
 * Zero window, seen by the sender: tcp_probe fires for every segment an
 * established socket receives, before its ACK is processed, so tp->snd_wnd is
 * still the window before this segment and the header's window field the one
 * it announces. A segment announcing 0 opens a stall (kept if one is open); a
 * segment announcing a window while snd_wnd is 0 ends it: the sender could not
 * send for [start, now) because the peer's receive buffer was full. Segments
 * with an open window and snd_wnd > 0 (nearly all) touch no map.
 */
static __always_inline void on_tcp_window(const struct sock *sk, __u16 window, __u32 snd_wnd)
{
	__u64 key = (__u64)(unsigned long)sk;
	__u64 now, *start;
	struct iso_rec_net *r;

	if (window == 0) {
		now = bpf_ktime_get_boot_ns();
		if (bpf_map_update_elem(&zwnd, &key, &now, BPF_NOEXIST) &&
		    !bpf_map_lookup_elem(&zwnd, &key))
			iso_percpu_inc(&stats, ISO_STAT_NET_SOCK_FULL);
		return;
	}
	if (snd_wnd != 0)
		return;
	start = bpf_map_lookup_elem(&zwnd, &key);
	if (!start)
		return;
	now = bpf_ktime_get_boot_ns();
	if (now > *start && now - *start >= net_min_ns && now - *start < ISO_NET_STALE_NS) {
		r = iso_reserve(&events, &stats, sizeof(*r));
		if (r) {
			__builtin_memset(r, 0, sizeof(*r));
			iso_fill_hdr(&r->hdr, ISO_REC_NET, sizeof(*r), 0, 0, now, 0, 0);
			r->start_ns = *start;
			r->event = ISO_NET_EV_ZWND;
			r->mech = ISO_NET_PROTOCOL;
			fill_sock(r, sk);
			bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
		}
	}
	bpf_map_delete_elem(&zwnd, &key);
}

/*
 * Per received segment of an established socket: the zero-window stall
 * (on_tcp_window), then the receive queue. Data arriving on a socket whose
 * receive queue is empty (copied_seq == rcv_nxt before this segment is
 * queued: tcp_probe fires at the top of tcp_rcv_established) is the first
 * unread data: remember when it came. Data arriving behind unread data keeps
 * the older time. The entry is overwritten, not kept, when the queue was
 * empty: an entry a read exit never closed (a socket read by recvmsg/readv)
 * does not outlive its data.
 */
static __always_inline void on_tcp_probe(struct sock *sk, const struct sk_buff *skb, bool btf)
{
	__u64 key = (__u64)(unsigned long)sk;
	__u64 now;
	unsigned char *head;
	__u16 th;
	__u8 hdr[4] = {}; /* TCP header bytes 12..15: data offset, flags, window */
	__u32 copied, rcv_nxt, snd_wnd;

	if (!net_enabled)
		return;
	if (btf) {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

		if (!tp)
			return;
		copied = tp->copied_seq;
		rcv_nxt = tp->rcv_nxt;
		snd_wnd = tp->snd_wnd;
	} else {
		const struct tcp_sock *tp = (const void *)sk;

		copied = BPF_CORE_READ(tp, copied_seq);
		rcv_nxt = BPF_CORE_READ(tp, rcv_nxt);
		snd_wnd = BPF_CORE_READ(tp, snd_wnd);
	}
	/* skb->data is at the TCP header here. */
	head = ISO_RD(btf, skb, head);
	th = ISO_RD(btf, skb, transport_header);
	if (bpf_probe_read_kernel(hdr, sizeof(hdr), head + th + 12))
		return;
	on_tcp_window(sk, ((__u16)hdr[2] << 8) | hdr[3], snd_wnd);
	if (copied != rcv_nxt)
		return;
	/* Data, not a bare ACK: the segment is longer than its TCP header. */
	if (ISO_RD(btf, skb, len) <= (unsigned int)(hdr[0] >> 4) * 4)
		return;
	now = bpf_ktime_get_boot_ns();
	if (bpf_map_update_elem(&rcvq, &key, &now, BPF_ANY))
		iso_percpu_inc(&stats, ISO_STAT_NET_SOCK_FULL);
}


/*
 * A retransmission, and the wait that preceded it: the flow has stalled since
 * the later of the start of the current send flight (tp->first_tx_mstamp, set
 * when data left with nothing in flight) and the last delivery
 * (tp->delivered_mstamp, on ACK/SACK progress), both in us on the TCP clock
 * (CLOCK_MONOTONIC, as bpf_ktime_get_ns). That covers an RTO, a tail loss
 * probe (~2 RTT + 200 ms for a lone segment) and a fast retransmit alike.
 * Neither the retransmitted skb's send stamp nor tp->lsndtime helps: the
 * transmit path refreshes both before this tracepoint fires. In TCP_CA_Loss
 * the timer fired (reason TIMEOUT), in TCP_CA_Recovery it is a fast
 * retransmit (FAST); a probe in Open/Disorder is timer-driven (TIMEOUT).
 * Falls back to icsk_rto (timeout) or srtt (fast) when the stamps look wrong.
 */
static __always_inline void on_retransmit(const struct sock *sk, const struct sk_buff *skb)
{
	const struct inet_connection_sock *icsk = (const void *)sk;
	const struct tcp_sock *tp = (const void *)sk;
	struct iso_rec_net *r;
	__u64 now, wait;
	__u8 ca_state;
	unsigned int hz;

	if (!net_enabled || !sk)
		return;
	now = bpf_ktime_get_boot_ns();
	ca_state = BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ca_state);
	r = iso_reserve(&events, &stats, sizeof(*r));
	if (!r)
		return;
	__builtin_memset(r, 0, sizeof(*r));
	{
		__u64 now_us = bpf_ktime_get_ns() / 1000;
		__u64 since = BPF_CORE_READ(tp, first_tx_mstamp);
		__u64 delivered = BPF_CORE_READ(tp, delivered_mstamp);

		if (delivered > since)
			since = delivered;
		r->reason = ca_state == ISO_TCP_CA_RECOVERY ? ISO_NET_RETRANS_FAST
							     : ISO_NET_RETRANS_TIMEOUT;
		/* More than 2 minutes (TCP_RTO_MAX) or in the future: not a stamp of
		 * this stall. */
		if (since && since <= now_us && now_us - since <= 120ull * 1000000) {
			wait = (now_us - since) * 1000;
			/* A fast retransmit follows the (S)ACK that just moved
			 * delivered_mstamp: it costs the flow about one RTT. */
			if (ca_state == ISO_TCP_CA_RECOVERY &&
			    wait < (__u64)(BPF_CORE_READ(tp, srtt_us) >> 3) * 1000)
				wait = (__u64)(BPF_CORE_READ(tp, srtt_us) >> 3) * 1000;
		} else if (ca_state == ISO_TCP_CA_RECOVERY) {
			wait = (__u64)(BPF_CORE_READ(tp, srtt_us) >> 3) * 1000;
		} else {
			hz = kernel_hz ? kernel_hz : 250;
			wait = (__u64)BPF_CORE_READ(icsk, icsk_rto) * (1000000000ull / hz);
		}
	}
	iso_fill_hdr(&r->hdr, ISO_REC_NET, sizeof(*r), 0, 0, now, 0, 0);
	r->start_ns = wait < now ? now - wait : 0;
	r->event = ISO_NET_EV_RETRANS;
	r->mech = ISO_NET_PROTOCOL;
	if (skb)
		r->bytes = BPF_CORE_READ(skb, len);
	fill_sock(r, sk);
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
}

static __always_inline bool drop_allowed(__u64 now)
{
	__u32 zero = 0;
	struct drop_limit *l = bpf_map_lookup_elem(&drop_limit, &zero);
	__u64 sec = now / 1000000000ull;

	if (!l)
		return false;
	if (l->window != sec) {
		l->window = sec;
		l->count = 0;
	}
	if (l->count >= ISO_NET_DROP_RECS_PER_SEC)
		return false;
	l->count++;
	return true;
}

/*
 * A freed skb with a drop reason. Every drop counts in drop_reasons. A record
 * leaves the kernel only for IPv4/IPv6 TCP/UDP packets with a specific reason:
 * NOT_SPECIFIED is what every kfree_skb() without a reason reports (many are
 * not packet losses at all) and SKB_CONSUMED is not a drop; both are counted
 * only. Records are limited to ISO_NET_DROP_RECS_PER_SEC per CPU.
 */
static __always_inline void on_kfree_skb(const struct sk_buff *skb, __u32 reason)
{
	__u32 slot = reason < ISO_NET_DROP_REASONS ? reason : ISO_NET_DROP_REASONS - 1;
	__u64 key = (__u64)(unsigned long)skb;
	struct iso_rec_net *r;
	__u64 now;

	if (!net_enabled)
		return;
	iso_percpu_inc(&drop_reasons, slot);
	/* A packet dropped in a qdisc or between a veth and its peer: forget it. */
	bpf_map_delete_elem(&skb_ts, &key);
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED))
		return;
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED))
		return;
	{
		__u16 proto = __builtin_bswap16(BPF_CORE_READ(skb, protocol));

		if (proto != ISO_ETH_P_IP && proto != ISO_ETH_P_IPV6)
			return;
	}
	now = bpf_ktime_get_boot_ns();
	r = iso_reserve(&events, &stats, sizeof(*r));
	if (!r)
		return;
	__builtin_memset(r, 0, sizeof(*r));
	{
		__u8 l4 = parse_pkt(r, skb);

		if ((l4 != ISO_IPPROTO_TCP && l4 != ISO_IPPROTO_UDP) || !drop_allowed(now)) {
			bpf_ringbuf_discard(r, 0);
			return;
		}
	}
	iso_fill_hdr(&r->hdr, ISO_REC_NET, sizeof(*r), 0, 0, now, 0, 0);
	r->start_ns = now;
	r->event = ISO_NET_EV_DROP;
	r->mech = ISO_NET_PROTOCOL;
	r->reason = (__u16)reason;
	r->bytes = BPF_CORE_READ(skb, len);
	fill_dev(r, BPF_CORE_READ(skb, dev));
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
}

/* Each hook twice: tp_btf (preferred) and raw_tp (fallback); ISO_HOOK,
 * hook.bpf.h. */
ISO_HOOK(qdisc_enqueue, iso_net_qdisc_enqueue,
	 ISO_ARGS(struct Qdisc *q, const struct netdev_queue *txq, struct sk_buff *skb),
	 on_qdisc_enqueue(skb))
ISO_HOOK(qdisc_dequeue, iso_net_qdisc_dequeue,
	 ISO_ARGS(struct Qdisc *q, const struct netdev_queue *txq, int packets,
		  struct sk_buff *skb),
	 on_qdisc_dequeue(skb, packets, btf))
ISO_HOOK(net_dev_queue, iso_net_dev_queue, struct sk_buff *skb, on_dev_queue(skb, btf))
ISO_HOOK(net_dev_start_xmit, iso_net_start_xmit,
	 ISO_ARGS(const struct sk_buff *skb, const struct net_device *dev),
	 on_start_xmit(skb, dev, btf))
ISO_HOOK(netif_receive_skb, iso_net_receive_skb, struct sk_buff *skb, on_receive(skb, btf))
ISO_HOOK(tcp_probe, iso_net_tcp_probe, ISO_ARGS(struct sock *sk, const struct sk_buff *skb),
	 on_tcp_probe(sk, skb, btf))
ISO_HOOK(tcp_retransmit_skb, iso_net_tcp_retransmit,
	 ISO_ARGS(const struct sock *sk, const struct sk_buff *skb), on_retransmit(sk, skb))
/* consume_skb(skb) (v6.3+ adds location, not read). */
ISO_HOOK(consume_skb, iso_net_consume_skb, struct sk_buff *skb, on_consume_skb(skb, btf))
/* kfree_skb(skb, location, reason) since v5.17 (reason added by commit
 * c504e5c2f964 "net: skb: introduce kfree_skb_reason()"); v6.3+ adds rx_sk
 * as a fourth argument, which is not read. Older kernels (two arguments)
 * fail to load this program and the loader leaves it off. */
ISO_HOOK(kfree_skb, iso_net_kfree_skb,
	 ISO_ARGS(struct sk_buff *skb, void *location, unsigned long long reason),
	 on_kfree_skb(skb, (__u32)reason))
