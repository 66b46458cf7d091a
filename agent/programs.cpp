#include "agent/programs.hpp"

#include <set>

#include <fmt/format.h>

namespace isoscope {

std::string_view ProgKindName(ProgKind kind) {
  switch (kind) {
    case ProgKind::kTpBtf:
      return "tp_btf";
    case ProgKind::kRawTp:
      return "raw_tp";
    case ProgKind::kTracepoint:
      return "tracepoint";
    case ProgKind::kFentry:
      return "fentry";
    case ProgKind::kKprobe:
      return "kprobe";
  }
  return "?";
}

Feature ProgKindFeature(ProgKind kind) {
  switch (kind) {
    case ProgKind::kTpBtf:
      return Feature::kTpBtf;
    case ProgKind::kRawTp:
      return Feature::kRawTp;
    case ProgKind::kTracepoint:
      return Feature::kTracefs;
    case ProgKind::kFentry:
      return Feature::kFentry;
    case ProgKind::kKprobe:
      return Feature::kKprobe;
  }
  return Feature::kCount;
}

const std::vector<ProgramSpec>& ContainerPrograms() {
  static const std::vector<ProgramSpec> table = [] {
    std::vector<ProgramSpec> t;
    // Each tracepoint hook (ISO_HOOK) exists as tp_btf (preferred) and raw_tp (fallback).
    auto pair = [&t](const std::string& fn, const std::string& tp, const std::string& area,
                     bool optional, const std::string& purpose) {
      t.push_back({fn + "_btf", tp, tp, ProgKind::kTpBtf, area, optional, purpose});
      t.push_back({fn + "_raw", tp, tp, ProgKind::kRawTp, area, optional, purpose});
    };
    auto hook = [&pair](const std::string& fn, const std::string& tp, bool optional,
                        const std::string& purpose) { pair(fn, tp, "container", optional, purpose); };
    hook("iso_sched_switch", "sched_switch", false, "on-CPU, run-queue, throttle and sleep segments");
    hook("iso_sched_wakeup", "sched_wakeup", false, "end of sleeps (blocked_io / blocked_other)");
    hook("iso_sched_wakeup_new", "sched_wakeup_new", false, "new threads start runnable");
    hook("iso_sched_exit", "sched_process_exit", false, "final totals of exiting threads");
    hook("iso_cgroup_attach", "cgroup_attach_task", true, "refresh cgroup ids after migration");
    hook("iso_direct_reclaim_begin", "mm_vmscan_direct_reclaim_begin", true,
         "container.memory_reclaim: direct reclaim start");
    hook("iso_direct_reclaim_end", "mm_vmscan_direct_reclaim_end", true,
         "container.memory_reclaim: direct reclaim end");
    hook("iso_memcg_reclaim_begin", "mm_vmscan_memcg_reclaim_begin", true,
         "container.memory_reclaim: memcg limit reclaim start");
    hook("iso_memcg_reclaim_end", "mm_vmscan_memcg_reclaim_end", true,
         "container.memory_reclaim: memcg limit reclaim end");
    // Optional extras: the exact end of a CFS throttle, splitting a throttled
    // off-CPU interval into throttle and the run-queue wait after unthrottle.
    const std::string unthrottle = "split throttle from the run-queue wait after unthrottle";
    t.push_back({"iso_unthrottle_fentry", "unthrottle", "unthrottle_cfs_rq", ProgKind::kFentry,
                 "container", true, unthrottle});
    t.push_back({"iso_unthrottle_kprobe", "unthrottle", "unthrottle_cfs_rq", ProgKind::kKprobe,
                 "container", true, unthrottle});
    // Trace-context binding: W3C traceparent in inbound HTTP/1.x request heads.
    auto sys = [&t](const std::string& fn, const std::string& tp, const std::string& purpose) {
      t.push_back({fn, tp, "syscalls/" + tp, ProgKind::kTracepoint, "requests", true, purpose});
    };
    sys("iso_read_exit", "sys_exit_read", "traceparent capture: scan read() request heads");
    sys("iso_recvfrom_exit", "sys_exit_recvfrom", "traceparent capture: scan recvfrom() request heads");
    sys("iso_write_exit", "sys_exit_write", "outbound traceparent: scan write() request heads");
    sys("iso_writev_exit", "sys_exit_writev", "outbound traceparent: scan writev() request heads");
    sys("iso_sendto_exit", "sys_exit_sendto", "outbound traceparent: scan sendto() request heads");
    sys("iso_sendmsg_exit", "sys_exit_sendmsg", "outbound traceparent: scan sendmsg() request heads");
    // Network slices (docs/network.md): all optional, so the network can never
    // keep the agent from starting. tp_btf preferred, raw_tp as fallback.
    auto net = [&pair](const std::string& fn, const std::string& tp, const std::string& purpose) {
      pair(fn, tp, "network", true, purpose);
    };
    // Qdisc backlog: qdisc:qdisc_enqueue -> qdisc:qdisc_dequeue where the kernel has them
    // (qdisc_enqueue since v5.15; qdisc_dequeue is older): they fire only on
    // devices with a real qdisc, so a noqueue veth costs nothing. Older kernels: net_dev_queue
    // (every packet of every device) -> net_dev_start_xmit, the same group's fallback.
    const std::string enqueue = "network qdisc: packet enters a device's qdisc";
    t.push_back({"iso_net_qdisc_enqueue_btf", "qdisc_enqueue", "qdisc_enqueue", ProgKind::kTpBtf,
                 "network", true, enqueue});
    t.push_back({"iso_net_qdisc_enqueue_raw", "qdisc_enqueue", "qdisc_enqueue", ProgKind::kRawTp,
                 "network", true, enqueue});
    t.push_back({"iso_net_dev_queue_btf", "qdisc_enqueue", "net_dev_queue", ProgKind::kTpBtf,
                 "network", true, enqueue + " (fallback: every packet)"});
    t.push_back({"iso_net_dev_queue_raw", "qdisc_enqueue", "net_dev_queue", ProgKind::kRawTp,
                 "network", true, enqueue + " (fallback: every packet)"});
    net("iso_net_qdisc_dequeue", "qdisc_dequeue", "network qdisc: packet leaves the qdisc");
    net("iso_net_start_xmit", "net_dev_start_xmit",
        "network: veth hand-over to the peer, virtio ring entry; qdisc exit on the fallback");
    net("iso_net_receive_skb", "netif_receive_skb", "network backlog: veth peer receives the packet");
    net("iso_net_tcp_probe", "tcp_probe", "network receive queue: first unread data on a socket");
    net("iso_net_tcp_retransmit", "tcp_retransmit_skb", "network retransmits: RTO or fast retransmit wait");
    net("iso_net_kfree_skb", "kfree_skb", "network drops: per drop reason");
    net("iso_net_consume_skb", "consume_skb",
        "network virtio: TX completion on a virtio-net NIC (device queue wait)");
    // Paravirt layer, block side (bpf/paravirt.bpf.c): block requests timed from queue to
    // completion; the I/O wait of the thread they wake splits into container.io_throttle,
    // paravirt.virtio_blk and app.blocked_io. Optional, tp_btf preferred.
    auto blk = [&pair](const std::string& fn, const std::string& tp, const std::string& purpose) {
      pair(fn, tp, "paravirt", true, purpose);
    };
    blk("iso_sched_waking", "sched_waking",
        "block: the completion wakes its waiter: split the I/O wait (waker's CPU and context)");
    blk("iso_blk_insert", "block_rq_insert", "block: request enters the I/O scheduler (who submitted it)");
    blk("iso_blk_issue", "block_rq_issue", "block: request handed to the driver (device time starts)");
    blk("iso_blk_merge", "block_rq_merge", "block: request merged into another (freed, no completion)");
    blk("iso_blk_complete", "block_rq_complete",
        "block: device done; splits the woken thread's I/O wait (virtio_blk, io_throttle)");
    // Hypervisor layer, host side (bpf/hypervisor.bpf.c): vCPU threads of VMMs on KVM. Classic
    // tracepoints: kvm_exit's reason is a field of its record only (docs/hypervisor.md).
    auto kvm = [&t](const std::string& fn, const std::string& tp, const std::string& purpose) {
      t.push_back({fn, tp, "kvm/" + tp, ProgKind::kTracepoint, "hypervisor", true, purpose});
    };
    kvm("iso_kvm_exit", "kvm_exit", "vCPU: guest -> kernel exit (hypervisor.vmexit, by reason)");
    kvm("iso_kvm_entry", "kvm_entry", "vCPU: kernel -> guest entry (end of the exit's handling)");
    kvm("iso_kvm_userspace_exit", "kvm_userspace_exit",
        "vCPU: exit handed to the VMM (paravirt.vmm_exit, by reason)");
    kvm("iso_kvm_fpu", "kvm_fpu", "vCPU: KVM_RUN starts (end of the VMM's handling)");
    return t;
  }();
  return table;
}

std::vector<ProgramDecision> PlanPrograms(const std::vector<ProgramSpec>& table,
                                          FeatureProber& prober) {
  std::vector<ProgramDecision> plan;
  std::set<std::string> satisfied;
  for (const auto& spec : table) {
    ProgramDecision d{&spec, false, ""};
    if (satisfied.count(spec.group)) {
      d.reason = fmt::format("alternative of an enabled {} program", spec.group);
      plan.push_back(d);
      continue;
    }
    const FeatureStatus feature = prober.Probe(ProgKindFeature(spec.kind));
    if (!feature.available) {
      d.reason = feature.reason;
      plan.push_back(d);
      continue;
    }
    const bool is_function = spec.kind == ProgKind::kFentry || spec.kind == ProgKind::kKprobe;
    const FeatureStatus target =
        is_function ? prober.HasFunction(spec.target) : prober.HasTracepoint(spec.target);
    if (!target.available) {
      d.reason = target.reason;
      plan.push_back(d);
      continue;
    }
    d.enabled = true;
    satisfied.insert(spec.group);
    plan.push_back(d);
  }
  return plan;
}

std::vector<std::string> MissingRequiredGroups(const std::vector<ProgramDecision>& plan) {
  std::set<std::string> required;
  std::set<std::string> enabled;
  for (const auto& d : plan) {
    if (!d.spec->optional) required.insert(d.spec->group);
    if (d.enabled) enabled.insert(d.spec->group);
  }
  std::vector<std::string> missing;
  for (const auto& g : required) {
    if (!enabled.count(g)) missing.push_back(g);
  }
  return missing;
}

}  // namespace isoscope
