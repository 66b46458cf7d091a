#include "agent/features.hpp"

#include <linux/bpf.h>
#include <sys/mount.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "collectors/identity/cgroup_identity.hpp"
#include "common/fs.hpp"

namespace isoscope {
namespace {

constexpr std::array<std::string_view, static_cast<std::size_t>(Feature::kCount)> kNames = {
    "btf", "ringbuf", "raw_tp", "tp_btf", "fentry", "kprobe", "boot_clock", "bpf_stats", "tracefs"};

// Loads `return 0` as a tracing program attached (by BTF id) to `btf_id`.
int TryLoadTracing(bpf_attach_type attach, int btf_id) {
  const bpf_insn insns[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = attach,
              .attach_btf_id = static_cast<__u32>(btf_id));
  int fd = bpf_prog_load(BPF_PROG_TYPE_TRACING, "iso_probe", "GPL", insns, 2, &opts);
  if (fd < 0) return -errno;
  close(fd);
  return 0;
}

}  // namespace

void EnsureTracefs() {
  if (!TracefsRoot().empty()) return;
  if (mount("nodev", "/sys/kernel/tracing", "tracefs", 0, nullptr) != 0) {
    spdlog::debug("mount tracefs on /sys/kernel/tracing: {}", std::strerror(errno));
  }
}

std::string TracefsRoot() {
  for (const char* root : {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}) {
    if (access(fmt::format("{}/events", root).c_str(), R_OK) == 0) return root;
  }
  return {};
}

std::string_view FeatureName(Feature feature) { return kNames[static_cast<std::size_t>(feature)]; }

KernelFeatureProber::KernelFeatureProber() {
  vmlinux_ = btf__load_vmlinux_btf();
  if (!vmlinux_) {
    btf_error_ = fmt::format("cannot load kernel BTF (/sys/kernel/btf/vmlinux): {}",
                             std::strerror(errno));
  }
}

KernelFeatureProber::~KernelFeatureProber() { btf__free(vmlinux_); }

FeatureStatus KernelFeatureProber::Probe(Feature feature) {
  auto it = cache_.find(feature);
  if (it != cache_.end()) return it->second;
  return cache_[feature] = ProbeUncached(feature);
}

FeatureStatus KernelFeatureProber::ProbeUncached(Feature feature) {
  switch (feature) {
    case Feature::kBtf:
      if (!vmlinux_) return {false, btf_error_};
      return {true, "/sys/kernel/btf/vmlinux"};
    case Feature::kRingBuf: {
      int r = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, nullptr);
      if (r == 1) return {true, ""};
      return {false, r == 0 ? "BPF ring buffer not supported (kernel < 5.8)"
                            : fmt::format("ring buffer probe failed: {}", std::strerror(-r))};
    }
    case Feature::kRawTp: {
      int r = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_RAW_TRACEPOINT, nullptr);
      if (r == 1) return {true, ""};
      return {false, r == 0 ? "raw tracepoint programs not supported"
                            : fmt::format("raw_tp probe failed: {}", std::strerror(-r))};
    }
    case Feature::kTpBtf: {
      if (!vmlinux_) return {false, btf_error_};
      int id = btf__find_by_name_kind(vmlinux_, "btf_trace_sched_switch", BTF_KIND_TYPEDEF);
      if (id < 0) return {false, "kernel BTF has no btf_trace_sched_switch"};
      int r = TryLoadTracing(BPF_TRACE_RAW_TP, id);
      if (r == 0) return {true, ""};
      return {false, fmt::format("tp_btf program load failed: {}", std::strerror(-r))};
    }
    case Feature::kFentry: {
      if (!vmlinux_) return {false, btf_error_};
      int id = btf__find_by_name_kind(vmlinux_, "do_nanosleep", BTF_KIND_FUNC);
      if (id < 0) id = btf__find_by_name_kind(vmlinux_, "schedule", BTF_KIND_FUNC);
      if (id < 0) return {false, "no probe target function in kernel BTF"};
      int r = TryLoadTracing(BPF_TRACE_FENTRY, id);
      if (r == 0) return {true, ""};
      return {false, fmt::format("fentry program load failed: {} (kernel without BPF trampoline "
                                 "support for this architecture/config)",
                                 std::strerror(-r))};
    }
    case Feature::kKprobe: {
      if (access("/sys/bus/event_source/devices/kprobe/type", R_OK) == 0) return {true, ""};
      return {false,
              "kernel has no kprobe PMU (/sys/bus/event_source/devices/kprobe missing): built "
              "without CONFIG_KPROBES"};
    }
    case Feature::kBootClock: {
      int r = libbpf_probe_bpf_helper(BPF_PROG_TYPE_RAW_TRACEPOINT, BPF_FUNC_ktime_get_boot_ns,
                                      nullptr);
      if (r == 1) return {true, ""};
      return {false, "bpf_ktime_get_boot_ns unavailable (kernel < 5.8)"};
    }
    case Feature::kBpfStats: {
      const std::string v = ReadFirstLine("/proc/sys/kernel/bpf_stats_enabled");
      if (v == "1") return {true, ""};
      return {false, "kernel.bpf_stats_enabled is 0 (per-program run time not collected)"};
    }
    case Feature::kTracefs: {
      if (!TracefsRoot().empty()) return {true, TracefsRoot()};
      return {false, "tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)"};
    }
    case Feature::kCount:
      break;
  }
  return {false, "unknown feature"};
}

FeatureStatus KernelFeatureProber::HasTracepoint(std::string_view name) {
  if (name.find('/') != std::string_view::npos) {
    // A classic tracepoint "category/event": look in tracefs.
    const std::string root = TracefsRoot();
    if (root.empty()) return {false, "tracefs is not mounted"};
    if (access(fmt::format("{}/events/{}/id", root, name).c_str(), R_OK) == 0) return {true, ""};
    return {false, fmt::format("kernel has no tracepoint {}", name)};
  }
  if (vmlinux_) {
    const std::string type = fmt::format("btf_trace_{}", name);
    if (btf__find_by_name_kind(vmlinux_, type.c_str(), BTF_KIND_TYPEDEF) >= 0) return {true, ""};
    return {false, fmt::format("kernel has no tracepoint {}", name)};
  }
  return {true, "assumed present (no BTF to check)"};
}

FeatureStatus KernelFeatureProber::HasFunction(std::string_view name) {
  if (vmlinux_) {
    const std::string fn(name);
    if (btf__find_by_name_kind(vmlinux_, fn.c_str(), BTF_KIND_FUNC) >= 0) return {true, ""};
    return {false, fmt::format("kernel function {} not in BTF (inlined or renamed)", name)};
  }
  return {false, "no kernel BTF to find functions in"};
}

KernelFacts ReadKernelFacts() {
  KernelFacts facts;
  utsname u{};
  if (uname(&u) == 0) facts.release = u.release;
  auto mounts = identity::ReadMounts();
  if (mounts) {
    facts.cgroup_mode = std::string(identity::CgroupModeName(mounts->mode()));
    facts.cgroup_v2_root = mounts->v2_root;
    auto cpu = mounts->v1_roots.find("cpu");
    if (cpu != mounts->v1_roots.end()) facts.cgroup_v1_cpu_root = cpu->second;
  } else {
    facts.cgroup_mode = "none";
  }
  facts.bpf_stats_enabled = ReadFirstLine("/proc/sys/kernel/bpf_stats_enabled") == "1";
  return facts;
}

bool CpuHasHardwareVirt(const std::string& cpuinfo_path) {
  std::ifstream in(cpuinfo_path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    return line.find(" vmx") != std::string::npos || line.find(" svm") != std::string::npos;
  }
  return false;
}

}  // namespace isoscope
