/* SPDX-License-Identifier: Apache-2.0 */
/*
 * isoscope's one shared ABI between the BPF programs and user space.
 *
 * Rules (see docs/abi.md):
 *  - fixed-width types only, every struct padded explicitly to a multiple of
 *    8 bytes, no pointers, no bool, no enums as field types;
 *  - every record starts with struct iso_rec_hdr; `size` is the whole record;
 *  - a change to any layout bumps ISO_ABI_VERSION; user space refuses a BPF
 *    object or a recording with another version (agent/loader.cpp,
 *    collectors/source/event_source.cpp);
 *  - numbering in the enums below is append-only.
 *
 * Included by C (BPF, -target bpf) and C++ (see abi.hpp for helpers).
 */
#ifndef ISOSCOPE_ABI_H
#define ISOSCOPE_ABI_H

#ifdef __ISOSCOPE_BPF__
/* BPF side: kernel_types.h already provides __u8.. __u64. */
#else
#include <linux/types.h>
#endif

#define ISO_ABI_VERSION 5u /* 2: ISO_REC_TRACEPARENT layout; 3: ISO_REC_NET, outbound traceparent;
                            4: ISO_NET_EV_DEVQ, ISO_NET_EV_ZWND; 5: eleven thread-state causes
                            (steal, vmexit, io_throttle, virtio_blk, vmm_exit), vCPU state,
                            ISO_REC_KVM, ISO_REC_NODE */

/* Record kinds. */
enum iso_rec_kind {
	ISO_REC_INVALID = 0,
	/* Cumulative per-thread cause times (user space snapshot of the tasks map). */
	ISO_REC_THREAD_TOTALS = 1,
	/* Same payload, emitted by BPF when a thread exits (final totals). */
	ISO_REC_THREAD_EXIT = 2,
	/* One off-CPU or stalled interval of a thread, streamed for per-request joins. */
	ISO_REC_DELAY = 3,
	/* Reserved for later layers, numbered now so files stay readable. */
	ISO_REC_TRACEPARENT = 4, /* horizontal axis: W3C traceparent seen on a read */
	ISO_REC_NET = 5,         /* network slices */
	ISO_REC_KVM = 6,         /* hypervisor layer: a vCPU thread's exits by reason (cumulative) */
	ISO_REC_SANDBOX = 7,     /* sandbox layer */
	/* Header only, written by user space: ends one snapshot of the tasks map
	 * (one interval). Replay cuts intervals exactly where live did. */
	ISO_REC_SNAPSHOT = 8,
	/* Node-wide counters of one CPU at a snapshot (cumulative), e.g. idle steal. */
	ISO_REC_NODE = 9,
	ISO_REC_KIND_MAX = 10,
};

/* Causes: the whole taxonomy (shared/TAXONOMY.md), numbered once. */
enum iso_cause {
	ISO_CAUSE_APP_ON_CPU = 0,
	ISO_CAUSE_APP_BLOCKED_IO = 1,
	ISO_CAUSE_APP_BLOCKED_OTHER = 2,
	ISO_CAUSE_CONTAINER_RUNQUEUE = 3,
	ISO_CAUSE_CONTAINER_CPU_THROTTLE = 4,
	ISO_CAUSE_CONTAINER_MEMORY_RECLAIM = 5,
	ISO_CAUSE_HYPERVISOR_STEAL = 6,
	ISO_CAUSE_HYPERVISOR_VMEXIT = 7,
	/* 8 was reserved for paravirt.virtio_net until ABI 5: virtio-net is the
	 * network's virtio slice (network.virtio.*), never produced as a cause. */
	ISO_CAUSE_CONTAINER_IO_THROTTLE = 8,
	ISO_CAUSE_PARAVIRT_VIRTIO_BLK = 9,
	ISO_CAUSE_PARAVIRT_VMM_EXIT = 10,
	/* Thread-state causes (0..10) end here: cause_ns[] holds this many,
	 * indexed by the cause. */
	ISO_THREAD_CAUSES = 11,
	ISO_CAUSE_SANDBOX_WASM_INSTANTIATE = 11,
	ISO_CAUSE_SANDBOX_WASM_HOSTCALL = 12,
	ISO_CAUSE_SANDBOX_GVISOR_SYSCALL = 13,
	/* network.<slice>.<mechanism> = ISO_CAUSE_NETWORK_BASE + slice * 3 + mechanism */
	ISO_CAUSE_NETWORK_BASE = 14,
	ISO_CAUSE_MAX = 14 + 5 * 3,
};

enum iso_net_slice {
	ISO_SLICE_SANDBOX = 0,
	ISO_SLICE_POD = 1,
	ISO_SLICE_NODE = 2,
	ISO_SLICE_VIRTIO = 3,
	ISO_SLICE_REMOTE = 4,
	ISO_SLICE_MAX = 5,
};

enum iso_net_mechanism {
	ISO_NET_QUEUE = 0,
	ISO_NET_SCHEDULING = 1,
	ISO_NET_PROTOCOL = 2,
	ISO_NET_MECHANISM_MAX = 3,
};

/* Record header: 40 bytes. */
struct iso_rec_hdr {
	__u16 kind;        /* enum iso_rec_kind */
	__u16 size;        /* whole record, header included, multiple of 8 */
	__u16 abi_version; /* ISO_ABI_VERSION of the writer */
	__u16 flags;       /* ISO_HDR_F_* */
	__u32 tgid;
	__u32 tid;
	__u64 ts_ns;            /* CLOCK_BOOTTIME (bpf_ktime_get_boot_ns) */
	__u64 cgroup_v2_id;     /* kernfs id of the task's cgroup v2 (1 = root) */
	__u64 cgroup_v1_cpu_id; /* kernfs id of the task's v1 cpu cgroup, 0 if none */
};

/* Per-thread state flags (iso_thread_totals.flags). Bit 0 is unused (reclaim
 * is tracked by reclaim_depth); not reused, so older recordings stay readable. */
#define ISO_TF_CGROUP_STALE (1u << 1)
#define ISO_TF_KTHREAD (1u << 2)
#define ISO_TF_VCPU (1u << 3) /* the thread ran KVM_RUN: a vCPU thread of a VMM */

/* Where a vCPU thread is (iso_thread_totals.vcpu_state; docs/hypervisor.md). */
enum iso_vcpu_state {
	ISO_VCPU_NONE = 0,   /* not a vCPU thread, or before its first KVM_RUN */
	ISO_VCPU_GUEST = 1,  /* in KVM_RUN, running the guest (app.on_cpu of the VM) */
	ISO_VCPU_EXIT = 2,   /* in the kernel handling an exit (hypervisor.vmexit; asleep = halted) */
	ISO_VCPU_VMM = 3,    /* back in the VMM after a userspace exit (paravirt.vmm_exit) */
};

#define ISO_NO_CPU 0xffffffffu

/*
 * Per-thread cumulative state. This is both the value of the BPF `tasks`
 * map and the payload of THREAD_TOTALS / THREAD_EXIT records, so a snapshot
 * is a plain copy. The open segment [seg_start_ns, now) belongs to seg_cause
 * and is not yet in cause_ns.
 */
struct iso_thread_totals {
	__u64 cause_ns[ISO_THREAD_CAUSES];
	__u64 seg_start_ns;
	__u64 cgroup_v2_id;
	__u64 cgroup_v1_cpu_id;
	__u64 throttled_cfs_rq; /* opaque key of the cfs_rq seen throttled, 0 if none */
	__u32 tgid;
	__u32 seg_cause; /* enum iso_cause, < ISO_THREAD_CAUSES */
	__u32 flags;     /* ISO_TF_* */
	__u32 reclaim_depth;
	__u64 switches; /* times switched in, for sanity and rates */
	/* Steal (guest side): the steal clock of CPU steal_cpu when the open
	 * segment's steal accounting began; steal_cpu ISO_NO_CPU when none. */
	__u64 steal_mark_ns;
	__u32 steal_cpu;
	__u32 vcpu_state;      /* enum iso_vcpu_state */
	__u64 exit_start_ns;   /* vCPU: when the open exit began (ISO_VCPU_EXIT or _VMM) */
	__u32 exit_reason;     /* vCPU: its reason (struct iso_rec_kvm.reason) */
	__u32 exit_isa;        /* vCPU: ISO_KVM_ISA_* of exit_reason */
	__u64 halted_ns;       /* vCPU: of app.blocked_other, the time asleep in an exit (HLT) */
	char comm[16];
};

struct iso_rec_thread_totals {
	struct iso_rec_hdr hdr;
	struct iso_thread_totals t;
};

/* A finished delay interval of one thread: [start_ns, hdr.ts_ns). */
struct iso_rec_delay {
	struct iso_rec_hdr hdr;
	__u64 start_ns;
	__u32 cause; /* enum iso_cause */
	__u32 cpu;
};

/* W3C traceparent seen in the head of an inbound HTTP/1.x request, parsed in
 * the kernel (no header bytes leave it). hdr.tid is the thread that read it;
 * hdr.ts_ns the end of that read. */
#define ISO_TP_F_TRACESTATE (1u << 0) /* a tracestate header was present */
#define ISO_TP_F_LATER_READ (1u << 1) /* found in a later read of the same request head */
/* Seen on a write (an outbound request this thread sent): parent_span_id is
 * then the sender's own span id (its CLIENT/PRODUCER span), the addresses
 * the sending socket's. */
#define ISO_TP_F_OUTBOUND (1u << 2)
struct iso_rec_traceparent {
	struct iso_rec_hdr hdr;
	__u8 trace_id[16];
	__u8 parent_span_id[8];
	__u64 sock;      /* opaque socket key (kernel struct sock address) */
	__u8 saddr[16];  /* local address; IPv4 in the first 4 bytes */
	__u8 daddr[16];  /* peer address */
	__u16 sport;     /* local port, host order */
	__u16 dport;     /* peer port, host order */
	__u16 family;    /* AF_INET (2) or AF_INET6 (10) */
	__u8 trace_flags;
	__u8 flags;      /* ISO_TP_F_* */
	__u32 fd;
	__u32 read_index; /* 0: the request's first read */
};

/*
 * Network evidence (docs/network.md): an interval [start_ns, hdr.ts_ns) that a
 * packet or a socket's data spent in one stage on this node. The slice is
 * chosen in user space (collectors/network) from the device and netns fields;
 * the mechanism is fixed by the event.
 */
enum iso_net_event {
	ISO_NET_EV_NONE = 0,
	/* skb: dev_queue_xmit (net_dev_queue) -> driver (net_dev_start_xmit) on
	 * one device: qdisc backlog. mech queue. */
	ISO_NET_EV_QDISC = 1,
	/* skb: start_xmit on a veth -> netif_receive_skb on its peer: the wait
	 * for the receiving CPU's softirq (backlog/NAPI). mech scheduling. */
	ISO_NET_EV_BACKLOG = 2,
	/* socket: first unread data arrived (tcp_probe) -> the application's read
	 * that took it. mech queue. */
	ISO_NET_EV_RCVQ = 3,
	/* socket: a retransmission; [start_ns, ts) is the wait that preceded it
	 * (the RTO for a timeout, about one RTT for a fast retransmit). mech
	 * protocol; reason = ISO_NET_RETRANS_*. */
	ISO_NET_EV_RETRANS = 4,
	/* skb freed with a drop reason (skb:kfree_skb); start_ns == ts. mech
	 * protocol; reason = the kernel's enum skb_drop_reason value. */
	ISO_NET_EV_DROP = 5,
	/* skb: start_xmit on a paravirtual NIC (virtio_net) -> the driver takes
	 * the buffer back (TX completion, skb:consume_skb): the wait in the
	 * device's virtqueue, i.e. for the host (vhost, the VMM) to send it,
	 * plus the completion interrupt. mech queue; slice virtio. */
	ISO_NET_EV_DEVQ = 6,
	/* socket: the peer announced a zero receive window; [start_ns, ts) until
	 * it announced an open one: the sender could not send (flow control).
	 * mech protocol; slice remote (waiting on the peer's reader). */
	ISO_NET_EV_ZWND = 7,
	ISO_NET_EV_MAX = 8,
};

#define ISO_NET_RETRANS_TIMEOUT 1u /* the retransmission timer fired (RTO, TLP) */
#define ISO_NET_RETRANS_FAST 2u    /* fast retransmit / recovery */

#define ISO_NET_F_HOST_NETNS (1u << 0) /* device or socket in the agent's (host) netns */
#define ISO_NET_F_SOCK (1u << 1)       /* addresses are the socket's: saddr local, daddr peer */
#define ISO_NET_F_TASK (1u << 2)       /* hdr.tgid/tid/cgroup are the owning task (process context) */

struct iso_rec_net {
	struct iso_rec_hdr hdr;
	__u64 start_ns;
	__u64 sock;      /* opaque socket key (struct sock address), 0 if the skb has none */
	__u8 saddr[16];  /* packet source, or the socket's local address (ISO_NET_F_SOCK) */
	__u8 daddr[16];  /* packet destination, or the socket's peer */
	__u16 sport;     /* host order */
	__u16 dport;
	__u16 family;    /* AF_INET (2) or AF_INET6 (10); 0 when not IP */
	__u8 event;      /* enum iso_net_event */
	__u8 mech;       /* enum iso_net_mechanism */
	__u32 ifindex;   /* device (skb events), 0 for socket events */
	__u32 netns_ino; /* netns of the device or the socket */
	__u32 bytes;     /* skb->len, or bytes read for ISO_NET_EV_RCVQ */
	__u16 reason;    /* ISO_NET_RETRANS_* or the drop reason */
	__u16 flags;     /* ISO_NET_F_* */
	char dev_kind[8];  /* rtnl_link_ops->kind ("veth", "bridge"); "" for a driver device */
	char dev_name[16]; /* device name in its netns; "" for socket events */
};

/*
 * A vCPU thread's exits with one reason, cumulative since the agent started
 * (user space snapshot of the `vcpu_exits` map, like THREAD_TOTALS). The
 * header is the vCPU thread's. For ISO_KVM_ISA_VMX/SVM the reason is the
 * kvm:kvm_exit tracepoint's exit_reason (VMX basic exit reason, SVM exit
 * code) and ns the time from the exit to the next guest entry; for
 * ISO_KVM_ISA_USERSPACE it is struct kvm_run's exit_reason (KVM_EXIT_IO, ...)
 * and ns the time from kvm_userspace_exit to the next KVM_RUN.
 */
#define ISO_KVM_ISA_VMX 1u
#define ISO_KVM_ISA_SVM 2u
#define ISO_KVM_ISA_USERSPACE 15u
struct iso_rec_kvm {
	struct iso_rec_hdr hdr;
	__u32 reason;
	__u32 isa;
	__u64 count;
	__u64 ns;
};

/* Key of the `vcpu_exits` map. */
struct iso_kvm_exit_key {
	__u32 tid;
	__u16 isa;
	__u16 pad;
	__u32 reason;
	__u32 pad2;
};
struct iso_kvm_exit_val {
	__u64 count;
	__u64 ns;
	__u32 tgid;
	__u32 pad;
	__u64 cgroup_v2_id;
	__u64 cgroup_v1_cpu_id;
};

/*
 * Node-wide steal of one CPU (hdr.tid = the CPU), cumulative, written by user
 * space at each snapshot: idle_steal_ns from the per-CPU `cpu_state` map
 * (steal the hypervisor took while the CPU was idle: the idle task is no
 * thread in `tasks`), kernel_steal_ns from /proc/stat (the kernel's own
 * account, the ground truth). Together with the threads' hypervisor.steal
 * the former adds up to the latter.
 */
struct iso_rec_node {
	struct iso_rec_hdr hdr;
	__u64 idle_steal_ns;
	__u64 kernel_steal_ns;
};

/* Value of the per-CPU `cpu_state` map. */
struct iso_cpu_state {
	__u64 steal_mark_ns;  /* steal clock when the idle task switched in; 0 when not idle */
	__u64 idle_steal_ns;
};

/*
 * The last block request completed on a CPU (per-CPU `blk_done` map):
 * written by block_rq_complete, read by the wake-up of the thread that waited
 * on it, which runs next on the same CPU (docs/hypervisor.md, "Block I/O").
 */
#define ISO_BLK_F_VIRTIO (1u << 0)     /* the disk is a virtio-blk device */
#define ISO_BLK_F_FROM_KTHREAD (1u << 1) /* entered the block layer from a kernel thread:
					    blk-throttle's dispatcher (the bio was held back) */
struct iso_blk_done {
	__u64 first_ns;    /* request inserted or issued, whichever came first */
	__u64 issue_ns;    /* handed to the driver (block_rq_issue) */
	__u64 complete_ns; /* block_rq_complete; 0 once consumed */
	__u32 flags;       /* ISO_BLK_F_* */
	__u32 dev;         /* major << 20 | minor */
};

/* Value of the per-CPU `blk_done` map: the last ISO_BLK_DONE_SLOTS
 * completions on the CPU, newest at (next - 1) % ISO_BLK_DONE_SLOTS. More
 * than one because completions nest: a hard-IRQ completion (and its wake-up)
 * can run between a soft-IRQ completion and the wake-up of its waiter. */
#define ISO_BLK_DONE_SLOTS 4
struct iso_blk_done_cpu {
	struct iso_blk_done slot[ISO_BLK_DONE_SLOTS];
	__u32 next;
	__u32 pad;
};

/* Value of the per-request `blk_reqs` map (key: struct request address). */
struct iso_blk_req {
	__u64 first_ns;
	__u64 issue_ns;
	__u32 flags;
	__u32 dev;
};

/* Self counters (BPF per-CPU array `stats`, index = enum iso_stat). */
enum iso_stat {
	ISO_STAT_RB_RESERVE_FAILED = 0, /* ring buffer full: record lost */
	ISO_STAT_TASKS_FULL = 1,        /* tasks map full: thread not tracked */
	ISO_STAT_SCHED_EVENTS = 2,      /* unused since v2: bpf_stats run_cnt counts events */
	ISO_STAT_THROTTLE_SPLITS = 3,   /* throttle intervals split by unthrottle probe */
	ISO_STAT_HTTP_HEADS = 4,        /* socket reads that started or continued an HTTP request head */
	ISO_STAT_TRACEPARENT_BAD = 5,   /* traceparent headers that failed to parse */
	ISO_STAT_HTTP_PENDING_FULL = 6, /* unused: reads need no per-read state */
	ISO_STAT_NET_SKB_FULL = 7,      /* skb timing map full: a packet's stage not timed */
	ISO_STAT_NET_SOCK_FULL = 8,     /* socket map full: a receive-queue wait not timed */
	ISO_STAT_BLK_REQS_FULL = 9,     /* block request map full: a request not timed */
	ISO_STAT_BLK_SPLITS = 10,       /* block waits split into throttle / device / rest */
	ISO_STAT_KVM_EXITS_FULL = 11,   /* vcpu_exits map full: an exit reason not counted */
	ISO_STAT_MAX = 16,
};

/* Replay file header (docs/abi.md, "Recording format"). 128 bytes. */
#define ISO_FILE_MAGIC "ISOREC\0\1"
struct iso_file_hdr {
	char magic[8];
	__u32 abi_version;
	__u32 hdr_size;       /* sizeof(struct iso_file_hdr) */
	__u64 boot_ns_start;  /* CLOCK_BOOTTIME when recording started */
	__u64 real_ns_start;  /* CLOCK_REALTIME at the same moment */
	char hostname[64];
	char kernel[32];      /* uname release, truncated */
};

#endif /* ISOSCOPE_ABI_H */
