// isoscope doctor: what works on this kernel, and why not where it does not.
#include <cstdio>
#include <iostream>

#include <bpf/btf.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "features.hpp"
#include "loader.hpp"

namespace isoscope {
namespace {

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
  auto probes = ContainerProbes::Open(LoadOptions{}, prober);
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
  for (const char* later : {"hypervisor", "paravirt", "sandbox", "network"}) {
    layers.push_back({later, false, "not built yet in this version (planned)"});
  }
  out["layers"] = nlohmann::json::array();
  for (const auto& l : layers) {
    out["layers"].push_back(
        {{"layer", l.layer}, {"available", l.available}, {"reason", l.reason}, {"causes", l.causes}});
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
