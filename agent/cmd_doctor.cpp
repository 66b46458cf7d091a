// isoscope doctor: what works on this kernel, and why not where it does not.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

#include <bpf/btf.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "agent/commands.hpp"
#include "agent/features.hpp"
#include "agent/loader.hpp"
#include "agent/pod_target.hpp"
#include "collectors/identity/cri.hpp"
#include "collectors/network/net_devices.hpp"
#include "collectors/paravirt/block_devices.hpp"
#include "common/fs.hpp"

namespace isoscope {
namespace {

using network::IsParavirtDriver;
using network::ListHostNics;

struct LayerStatus {
  std::string layer;
  bool available = false;
  std::string reason;
  nlohmann::json causes = nlohmann::json::array();
};

nlohmann::json CauseStatus(abi::Cause cause, bool available, const std::string& reason) {
  return {{"cause", std::string(abi::CauseName(cause))}, {"available", available}, {"reason", reason}};
}

bool KernelHasField(const char* type, const char* field) {
  btf* vmlinux = btf__load_vmlinux_btf();
  if (!vmlinux) return false;
  bool found = false;
  const int id = btf__find_by_name_kind(vmlinux, type, BTF_KIND_STRUCT);
  if (id > 0) {
    const btf_type* t = btf__type_by_id(vmlinux, id);
    const btf_member* m = btf_members(t);
    for (int i = 0; i < btf_vlen(t); ++i, ++m) {
      if (std::string_view(btf__name_by_offset(vmlinux, m->name_off)) == field) found = true;
    }
  }
  btf__free(vmlinux);
  return found;
}

std::string RunCapture(const char* cmd) {
  std::string out;
  if (FILE* p = popen(cmd, "r")) {
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    pclose(p);
  }
  return out;
}

// The devices of the agent's (host) netns, with what the network slices see of them:
// kind from `ip -d -j link` (rtnl_link_ops kind: veth, bridge...), else from sysfs
// (bridge/ directory); the driver from sysfs (device/driver link, e.g. virtio_net). A qdisc on a
// veth is the pod slice, any other the node slice; a paravirtual NIC's own ring is the virtio
// slice.
nlohmann::json HostDevices() {
  std::map<std::string, std::string> ip_kinds;
  const nlohmann::json links =
      nlohmann::json::parse(RunCapture("ip -d -j link show 2>/dev/null"), nullptr, false);
  if (links.is_array()) {
    for (const auto& l : links) {
      if (l.contains("ifname") && l.contains("linkinfo") && l["linkinfo"].contains("info_kind")) {
        ip_kinds[l["ifname"].get<std::string>()] = l["linkinfo"]["info_kind"].get<std::string>();
      }
    }
  }
  nlohmann::json out = nlohmann::json::array();
  for (const auto& nic : ListHostNics()) {
    std::string kind;
    if (auto it = ip_kinds.find(nic.name); it != ip_kinds.end()) kind = it->second;
    if (kind.empty() && nic.bridge) kind = "bridge";
    out.push_back({{"name", nic.name},
                   {"ifindex", nic.ifindex},
                   {"kind", kind},
                   {"driver", nic.driver},
                   {"qdisc_slice", kind == "veth" ? "pod" : "node"},
                   {"device_slice", IsParavirtDriver(nic.driver) ? "virtio" : ""}});
  }
  return out;
}

// tc clsact (sch_ingress) and cls_bpf, from the kernel config when it is readable.
nlohmann::json TcStatus() {
  const std::string cfg =
      RunCapture("(zcat /proc/config.gz 2>/dev/null || cat /boot/config-$(uname -r) 2>/dev/null) | "
                 "grep -E '^CONFIG_NET_SCH_INGRESS=|^CONFIG_NET_CLS_BPF='");
  if (cfg.empty()) return {{"clsact", nullptr}, {"reason", "kernel config not readable"}};
  const bool ingress = cfg.find("CONFIG_NET_SCH_INGRESS=") != std::string::npos;
  const bool cls_bpf = cfg.find("CONFIG_NET_CLS_BPF=") != std::string::npos;
  std::string reason;
  if (!ingress) reason = "CONFIG_NET_SCH_INGRESS not set (no clsact qdisc)";
  else if (!cls_bpf) reason = "CONFIG_NET_CLS_BPF not set";
  return {{"clsact", ingress && cls_bpf}, {"reason", reason}};
}

}  // namespace

int RunDoctor(const DoctorOptions& o) {
  KernelFeatureProber prober;
  const KernelFacts facts = ReadKernelFacts();
  nlohmann::json out;
  out["kernel"] = {{"release", facts.release},
                   {"btf", prober.Probe(Feature::kBtf).available},
                   {"cgroup_mode", facts.cgroup_mode},
                   {"cgroup_v2_root", facts.cgroup_v2_root},
                   {"cgroup_v1_cpu_root", facts.cgroup_v1_cpu_root},
                   {"bpf_stats", facts.bpf_stats_enabled}};
  out["features"] = nlohmann::json::array();
  for (int f = 0; f < static_cast<int>(Feature::kCount); ++f) {
    const FeatureStatus s = prober.Probe(static_cast<Feature>(f));
    out["features"].push_back({{"name", std::string(FeatureName(static_cast<Feature>(f)))},
                               {"available", s.available},
                               {"reason", s.available ? "" : s.reason}});
  }

  // Load and attach for real: the only honest answer to "does it work here".
  auto probes = Probes::Open(LoadOptions{}, prober);
  out["programs"] = nlohmann::json::array();
  std::vector<ProgramState> states;
  if (probes) {
    states = (*probes)->programs();
  } else {
    for (const auto& d : PlanPrograms(ContainerPrograms(), prober)) {
      states.push_back({d.spec, false, d.enabled ? probes.error().message : d.reason});
    }
  }
  auto attached = [&](const std::string& group) {
    for (const auto& s : states) {
      if (s.spec->group == group && s.attached) return true;
    }
    return false;
  };
  for (const auto& s : states) {
    out["programs"].push_back({{"name", s.spec->name},
                               {"group", s.spec->group},
                               {"kind", std::string(ProgKindName(s.spec->kind))},
                               {"target", s.spec->target},
                               {"layer", s.spec->area},
                               {"optional", s.spec->optional},
                               {"available", s.attached},
                               {"reason", s.attached ? "" : s.reason},
                               {"purpose", s.spec->purpose}});
  }

  // Layers and their causes.
  std::vector<LayerStatus> layers;
  LayerStatus c;
  c.layer = "container";
  c.available = probes.ok();
  c.reason = probes ? "" : probes.error().message;
  const bool sched = probes.ok();
  const std::string no_sched = sched ? "" : "scheduler probes unavailable";
  for (abi::Cause cause : {ISO_CAUSE_APP_ON_CPU, ISO_CAUSE_APP_BLOCKED_IO,
                           ISO_CAUSE_APP_BLOCKED_OTHER, ISO_CAUSE_CONTAINER_RUNQUEUE}) {
    c.causes.push_back(CauseStatus(cause, sched, no_sched));
  }
  const bool throttle_field = KernelHasField("cfs_rq", "throttle_count");
  std::string throttle_note;
  if (!throttle_field) {
    throttle_note = "kernel without CONFIG_CFS_BANDWIDTH (no cfs_rq.throttle_count)";
  } else if (!attached("unthrottle")) {
    throttle_note =
        "precision: the run-queue wait after an unthrottle is counted as throttle "
        "(unthrottle probe unavailable: needs fentry or kprobes)";
  }
  c.causes.push_back(CauseStatus(ISO_CAUSE_CONTAINER_CPU_THROTTLE, sched && throttle_field,
                                 sched ? throttle_note : no_sched));
  const bool reclaim = attached("mm_vmscan_direct_reclaim_begin") ||
                       attached("mm_vmscan_memcg_reclaim_begin");
  c.causes.push_back(CauseStatus(ISO_CAUSE_CONTAINER_MEMORY_RECLAIM, reclaim,
                                 reclaim ? "" : "vmscan reclaim tracepoints not attached"));
  layers.push_back(c);
  {
    // Network slices: optional, never needed for the agent to start.
    LayerStatus n;
    n.layer = "network";
    int on = 0;
    std::vector<std::string> off;
    for (const auto& s : states) {
      if (s.spec->area != "network") continue;
      if (attached(s.spec->group)) {
        if (s.attached) ++on;
      } else if (s.spec->kind == ProgKind::kTpBtf) {
        off.push_back(s.spec->group + ": " + s.reason);
      }
    }
    n.available = on > 0;
    for (std::size_t i = 0; i < off.size(); ++i) n.reason += (i ? "; " : "") + off[i];
    if (!probes) n.reason = probes.error().message;
    const bool qdisc =
        attached("qdisc_enqueue") && attached("qdisc_dequeue") && attached("net_dev_start_xmit");
    const bool backlog = qdisc && attached("netif_receive_skb");
    const bool rcvq = attached("tcp_probe") && (attached("sys_exit_read") || attached("sys_exit_recvfrom"));
    auto cause = [](const char* name, bool ok, const char* needs) {
      return nlohmann::json{{"cause", name}, {"available", ok}, {"reason", ok ? "" : needs}};
    };
    n.causes.push_back(
        cause("network.*.queue (qdisc)", qdisc,
              "needs qdisc_enqueue (or net_dev_queue) + qdisc_dequeue + net_dev_start_xmit"));
    n.causes.push_back(cause("network.*.scheduling (veth backlog)", backlog, "needs the qdisc pair + netif_receive_skb"));
    n.causes.push_back(cause("network.*.queue (receive queue)", rcvq, "needs tcp_probe + a socket read exit"));
    n.causes.push_back(cause("network.*.protocol (retransmit)", attached("tcp_retransmit_skb"), "needs tcp_retransmit_skb"));
    n.causes.push_back(cause("network.*.protocol (drops)", attached("kfree_skb"), "needs kfree_skb with a drop reason (v5.17+)"));
    n.causes.push_back(
        cause("network.remote.protocol (zero window)", attached("tcp_probe"), "needs tcp_probe"));
    {
      const bool virtio = attached("consume_skb") && attached("net_dev_start_xmit");
      std::string why = "needs net_dev_start_xmit + consume_skb";
      if (probes && (*probes)->paravirt_ifindex().empty())
        why = "no virtio-net NIC in the host netns";
      n.causes.push_back({{"cause", "network.virtio.queue (device ring)"},
                          {"available", virtio},
                          {"reason", virtio ? "" : why}});
    }
    layers.push_back(n);
  }
  out["network"] = {{"host_netns_ino", SelfNetnsInode()},
                    {"devices", HostDevices()},
                    {"tc", TcStatus()},
                    {"programs", nlohmann::json::array()}};
  for (const auto& s : states) {
    if (s.spec->area != "network" && s.spec->name.find("write") == std::string::npos &&
        s.spec->name.find("send") == std::string::npos) {
      continue;
    }
    out["network"]["programs"].push_back(
        {{"name", s.spec->name}, {"loaded", s.attached}, {"reason", s.attached ? "" : s.reason}});
  }
  {
    // Hypervisor and paravirt layers (docs/hypervisor.md): guest side (this node is a VM) and
    // host side (this node runs VMs on KVM).
    const auto cpuinfo_text = ReadFileText("/proc/cpuinfo");
    const std::string cpuinfo = cpuinfo_text ? *cpuinfo_text : std::string();
    const bool guest = cpuinfo.find(" hypervisor") != std::string::npos;
    const bool hw_virt = CpuHasHardwareVirt();
    const bool dev_kvm = access("/dev/kvm", F_OK) == 0;
    const bool steal_fields = KernelHasField("rq", "prev_steal_time") &&
                              KernelHasField("cfs_rq", "rq");
    const bool kvm_tp = attached("kvm_exit") || attached("kvm_userspace_exit");
    std::vector<nlohmann::json> disks;
    std::string virtio_disks;
    for (const auto& d : paravirt::ListBlockDisks()) {
      disks.push_back({{"name", d.name}, {"dev", fmt::format("{}:{}", d.major, d.minor)},
                       {"driver", d.driver}, {"virtio", d.virtio}});
      if (d.virtio) virtio_disks += (virtio_disks.empty() ? "" : ", ") + d.name;
    }
    const bool blk = attached("block_rq_issue") && attached("block_rq_complete");

    LayerStatus h;
    h.layer = "hypervisor";
    std::string steal_why;
    if (!sched) {
      steal_why = no_sched;
    } else if (!steal_fields) {
      steal_why = "kernel without a per-CPU steal clock (CONFIG_PARAVIRT_TIME_ACCOUNTING, "
                  "CONFIG_FAIR_GROUP_SCHED)";
    } else if (!guest) {
      steal_why = "guest side: this node is not a VM (no hypervisor CPU flag), so no steal; "
                  "host side: vCPU threads' run-queue wait";
    }
    h.causes.push_back(CauseStatus(ISO_CAUSE_HYPERVISOR_STEAL, sched && steal_fields, steal_why));
    std::string vmexit_why;
    if (!dev_kvm) {
      vmexit_why = "no /dev/kvm: this node runs no VMs on KVM";
    } else if (!attached("kvm_exit")) {
      vmexit_why = "kvm:kvm_exit not attached (kvm module not loaded, or tracefs missing)";
    } else if (!hw_virt) {
      vmexit_why = "no vmx/svm CPU flag: KVM runs guests in its instruction emulator only, "
                   "kvm_exit never fires (VMM exits are still seen)";
    }
    h.causes.push_back(CauseStatus(ISO_CAUSE_HYPERVISOR_VMEXIT,
                                   dev_kvm && attached("kvm_exit") && hw_virt, vmexit_why));
    h.available = sched && (steal_fields || attached("kvm_exit"));
    h.reason = guest ? "this node is a VM: steal from its vCPUs' steal clock"
                     : (dev_kvm ? "this node can run VMs (/dev/kvm)" : "");
    layers.push_back(h);

    LayerStatus pv;
    pv.layer = "paravirt";
    std::string blk_why;
    if (!blk) {
      blk_why = "block_rq_issue/block_rq_complete not attached";
    } else if (virtio_disks.empty()) {
      blk_why = "no virtio-blk disk on this node";
    }
    pv.causes.push_back(CauseStatus(ISO_CAUSE_PARAVIRT_VIRTIO_BLK, blk && !virtio_disks.empty(),
                                    blk_why.empty() ? "disks: " + virtio_disks : blk_why));
    pv.causes.push_back(CauseStatus(
        ISO_CAUSE_PARAVIRT_VMM_EXIT, attached("kvm_userspace_exit"),
        attached("kvm_userspace_exit")
            ? ""
            : (dev_kvm ? "kvm:kvm_userspace_exit not attached" : "no /dev/kvm: no VMM here")));
    pv.available = blk || attached("kvm_userspace_exit");
    if (!pv.available) pv.reason = "neither block nor KVM tracepoints attached";
    layers.push_back(pv);
    // container.io_throttle: blk-throttle's hold-back, seen through the block programs.
    for (auto& l : layers) {
      if (l.layer != "container") continue;
      l.causes.push_back(CauseStatus(ISO_CAUSE_CONTAINER_IO_THROTTLE, blk,
                                     blk ? "" : "block_rq_* tracepoints not attached"));
    }
    out["hypervisor"] = {{"guest", guest},        {"hw_virt", hw_virt},
                         {"dev_kvm", dev_kvm},    {"steal_clock", steal_fields},
                         {"kvm_tracepoints", kvm_tp}, {"disks", disks}};
  }
  layers.push_back({"sandbox", false, "not built yet in this version (planned)"});
  out["layers"] = nlohmann::json::array();
  for (const auto& l : layers) {
    out["layers"].push_back(
        {{"layer", l.layer}, {"available", l.available}, {"reason", l.reason}, {"causes", l.causes}});
  }

  // Kubernetes names (agent/pod_target.hpp, collectors/identity/cri.hpp): which runtime answers.
  {
    nlohmann::json k8s = {{"node", PodTarget::NodeName()}};
    auto cri = identity::CriClient::Connect(o.cri_endpoint, std::chrono::milliseconds(1000));
    if (cri) {
      auto snap = (*cri)->Snapshot();
      k8s["cri"] = {{"endpoint", (*cri)->endpoint()}, {"available", snap.ok()}};
      if (snap) {
        k8s["cri"]["runtime"] = snap->runtime_name + " " + snap->runtime_version;
        k8s["cri"]["pods"] = snap->pods.size();
        k8s["cri"]["containers"] = snap->containers.size();
        k8s["cri"]["reason"] = "";
      } else {
        k8s["cri"]["reason"] = snap.error().message;
      }
    } else {
      k8s["cri"] = {{"endpoint", o.cri_endpoint},
                    {"available", false},
                    {"reason", cri.error().message + "; pods are traced by --pod-uid and labelled "
                                                     "by uid only"}};
    }
    out["kubernetes"] = std::move(k8s);
  }

  if (o.json) {
    std::cout << out.dump() << '\n';
  } else {
    const auto& k = out["kernel"];
    std::cout << "kernel " << facts.release << " · BTF " << (k["btf"].get<bool>() ? "yes" : "no")
              << " · cgroup " << facts.cgroup_mode << " · bpf_stats "
              << (facts.bpf_stats_enabled ? "on" : "off") << "\n\nfeatures\n";
    for (const auto& f : out["features"]) {
      std::printf("  %-11s %-4s %s\n", f["name"].get<std::string>().c_str(),
                  f["available"].get<bool>() ? "yes" : "no", f["reason"].get<std::string>().c_str());
    }
    std::cout << "\nprograms\n";
    for (const auto& p : out["programs"]) {
      std::printf("  %-30s %-6s %-4s %s%s\n", p["name"].get<std::string>().c_str(),
                  p["kind"].get<std::string>().c_str(), p["available"].get<bool>() ? "on" : "off",
                  p["optional"].get<bool>() ? "(optional) " : "", p["reason"].get<std::string>().c_str());
    }
    const auto& net = out["network"];
    std::cout << "\nnetwork (host netns " << net["host_netns_ino"].get<std::uint32_t>() << ")\n";
    for (const auto& p : net["programs"]) {
      std::printf("  %-30s %-4s %s\n", p["name"].get<std::string>().c_str(),
                  p["loaded"].get<bool>() ? "on" : "off", p["reason"].get<std::string>().c_str());
    }
    std::cout << "  devices\n";
    for (const auto& d : net["devices"]) {
      const std::string device_slice = d["device_slice"].get<std::string>();
      std::printf(
          "    %-16s ifindex %-5d kind %-8s driver %-12s qdisc slice %s%s\n",
          d["name"].get<std::string>().c_str(), d["ifindex"].get<int>(),
          d["kind"].get<std::string>().empty() ? "-" : d["kind"].get<std::string>().c_str(),
          d["driver"].get<std::string>().empty() ? "-" : d["driver"].get<std::string>().c_str(),
          d["qdisc_slice"].get<std::string>().c_str(),
          device_slice.empty() ? "" : (", device ring slice " + device_slice).c_str());
    }
    const auto& tc = net["tc"];
    std::printf("  tc clsact + cls_bpf: %s %s\n",
                tc["clsact"].is_null() ? "unknown" : (tc["clsact"].get<bool>() ? "yes" : "no"),
                tc["reason"].get<std::string>().c_str());
    const auto& cri = out["kubernetes"]["cri"];
    std::cout << "\nkubernetes (node " << out["kubernetes"]["node"].get<std::string>() << ")\n";
    if (cri["available"].get<bool>()) {
      std::printf("  CRI %-4s %s at %s: %zu pods, %zu containers\n", "yes",
                  cri["runtime"].get<std::string>().c_str(),
                  cri["endpoint"].get<std::string>().c_str(), cri["pods"].get<std::size_t>(),
                  cri["containers"].get<std::size_t>());
    } else {
      std::printf("  CRI %-4s %s\n", "no", cri["reason"].get<std::string>().c_str());
    }
    std::cout << "\nlayers\n";
    for (const auto& l : out["layers"]) {
      std::printf("  %-11s %-4s %s\n", l["layer"].get<std::string>().c_str(),
                  l["available"].get<bool>() ? "yes" : "no", l["reason"].get<std::string>().c_str());
      for (const auto& cs : l["causes"]) {
        std::printf("    %-26s %-4s %s\n", cs["cause"].get<std::string>().c_str(),
                    cs["available"].get<bool>() ? "yes" : "no", cs["reason"].get<std::string>().c_str());
      }
    }
  }
  return probes ? kExitOk : kExitFailure;
}

}  // namespace isoscope
