/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The kernel types isoscope's BPF programs read, hand-written as a CO-RE
 * subset (docs/bpf-types.md explains the choice over a generated vmlinux.h).
 *
 * Every struct carries preserve_access_index, so field offsets are relocated
 * by libbpf against the running kernel's BTF at load time: the layout below
 * only has to name the fields, not match the kernel's order or padding.
 * Fields that do not exist on every supported kernel (>= 5.8) are read
 * through the flavours in core_fixes.bpf.h.
 */
#ifndef ISOSCOPE_KERNEL_TYPES_H
#define ISOSCOPE_KERNEL_TYPES_H

/* Tells bpf_tracing.h that pt_regs has the kernel's field names (di, si...),
 * as a generated vmlinux.h would. */
#ifndef __VMLINUX_H__
#define __VMLINUX_H__
#endif

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

/* uapi constants from <linux/bpf.h> that the programs use. */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_RINGBUF = 27,
};
enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};
enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};
#define BPF_F_NO_PREALLOC (1U << 0)

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

/* x86-64 register frame, for kprobe argument access (bpf_tracing.h). */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di;
	unsigned long orig_ax, ip, cs, flags, sp, ss;
};

struct kernfs_node {
	u64 id; /* u64 since v5.5 (commit 67c0496e87d1 "kernfs: convert ->id to u64") */
};

struct cgroup {
	struct kernfs_node *kn;
	int level;
};

struct cgroup_subsys_state {
	struct cgroup *cgroup;
};

struct css_set {
	struct cgroup_subsys_state *subsys[14];
	struct cgroup *dfl_cgrp;
};

/* Steal clock of a CPU: update_rq_clock_task() moves prev_steal_time_rq up
 * to the paravirtual steal clock at every run-queue clock update (each
 * schedule()) with CONFIG_PARAVIRT_TIME_ACCOUNTING; prev_steal_time is the
 * tick-based account behind /proc/stat (steal_account_process_time()). */
struct rq {
	int cpu;
	u64 prev_steal_time;
	u64 prev_steal_time_rq;
};

struct cfs_rq {
	int throttle_count; /* > 0 while this cfs_rq or an ancestor is throttled */
	struct rq *rq;      /* CONFIG_FAIR_GROUP_SCHED: the CPU's run queue */
};

struct sched_entity {
	struct cfs_rq *cfs_rq; /* CONFIG_FAIR_GROUP_SCHED */
};

struct inode {
	unsigned short i_mode;
};

struct file {
	void *private_data;
	struct inode *f_inode;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct in6_addr {
	union {
		__u8 u6_addr8[16];
	} in6_u;
};

/* Network namespaces and devices (bpf/network.bpf.c). */
struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

/* Same shape as the kernel's (an anonymous struct behind a typedef), so
 * CO-RE matches the member through it. */
typedef struct {
	struct net *net;
} possible_net_t;

struct sock_common {
	possible_net_t skc_net;
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol; /* a plain u16 since v5.6 (a bitfield before; isoscope needs v5.8+) */
};

struct socket {
	struct sock *sk;
};

struct inet_connection_sock {
	__u32 icsk_rto;
	__u8 icsk_ca_state : 5;
};

struct tcp_sock {
	__u32 srtt_us;    /* smoothed RTT << 3, in us */
	__u64 first_tx_mstamp;  /* us, tcp clock (CLOCK_MONOTONIC): start of the send flight */
	__u64 delivered_mstamp; /* us, tcp clock: when data was last delivered (ACKed/SACKed) */
	__u32 rcv_nxt;    /* next sequence number expected */
	__u32 copied_seq; /* head of yet unread data */
	__u32 packets_out; /* segments in flight */
	__u32 snd_wnd;     /* the window the peer announced last (scaled) */
};

struct rtnl_link_ops {
	const char *kind;
};

struct Qdisc_ops {
	char id[16];
};

struct Qdisc {
	const struct Qdisc_ops *ops;
};

struct net_device_ops;

struct net_device {
	char name[16];
	int ifindex;
	const struct net_device_ops *netdev_ops; /* one per driver: identifies virtio_net */
	possible_net_t nd_net;
	const struct rtnl_link_ops *rtnl_link_ops;
	struct Qdisc *qdisc; /* root qdisc */
};

struct netdev_queue;

struct sk_buff {
	struct sk_buff *next; /* a bulk dequeue's list */
	struct net_device *dev;
	struct sock *sk;
	unsigned int len;
	__be16 protocol;
	__u16 transport_header;
	__u16 network_header;
	unsigned char *head;
	unsigned char *data;
};

/* Block layer (paravirt.bpf.c). request_queue::disk since v5.15 (commit
 * d152c682f03c "block: add an explicit ->disk backpointer to the
 * request_queue"); before, request::rq_disk (core_fixes.bpf.h). */
struct gendisk {
	int major;
	int first_minor;
};

struct request_queue {
	struct gendisk *disk;
};

struct request {
	struct request_queue *q;
};

/* Classic tracepoint records of the kvm events (format files under
 * events/kvm/): relocated by name against vmlinux or the kvm module's BTF. */
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

struct trace_event_raw_kvm_exit {
	struct trace_entry ent;
	unsigned int exit_reason;
	u32 isa;
};

struct trace_event_raw_kvm_userspace_exit {
	struct trace_entry ent;
	u32 reason;
	int errno;
};

struct trace_event_raw_kvm_fpu {
	struct trace_entry ent;
	u32 load;
};

struct task_struct {
	unsigned int __state; /* v5.14+, see core_fixes.bpf.h for older `state` */
	unsigned int flags;
	int pid;
	int tgid;
	unsigned int in_iowait : 1;
	struct sched_entity se;
	struct css_set *cgroups;
	struct files_struct *files;
	char comm[16];
};

#pragma clang attribute pop

/* Scheduler constants (include/linux/sched.h), stable across supported kernels. */
#define ISO_TASK_RUNNING 0x0000
#define ISO_TASK_DEAD 0x0080
#define ISO_PF_KTHREAD 0x00200000
#define ISO_S_IFMT 00170000
#define ISO_S_IFSOCK 0140000
#define ISO_AF_INET 2
#define ISO_AF_INET6 10
#define ISO_ETH_P_IP 0x0800
#define ISO_ETH_P_IPV6 0x86DD
#define ISO_IPPROTO_TCP 6
#define ISO_IPPROTO_UDP 17
#define ISO_TCP_CA_RECOVERY 3
#define ISO_TCP_CA_LOSS 4

#endif /* ISOSCOPE_KERNEL_TYPES_H */
