// Kernel feature probing behind an interface, so tests can replace the
// kernel with a table (tests/unit/programs_test.cpp).
#pragma once

#include <array>
#include <map>
#include <string>
#include <string_view>

struct btf;
namespace isoscope {

enum class Feature {
  kBtf,       // /sys/kernel/btf/vmlinux, parsable
  kRingBuf,   // BPF_MAP_TYPE_RINGBUF
  kRawTp,     // BPF_PROG_TYPE_RAW_TRACEPOINT
  kTpBtf,     // BTF-typed tracepoints (tracing prog, BPF_TRACE_RAW_TP)
  kFentry,    // BPF trampolines (tracing prog, BPF_TRACE_FENTRY)
  kKprobe,    // kprobe perf PMU
  kBootClock, // bpf_ktime_get_boot_ns
  kBpfStats,  // kernel.bpf_stats_enabled is on (per-program run time)
  kTracefs,   // tracefs mounted (classic tracepoint programs attach through it)
  kCount,
};

std::string_view FeatureName(Feature feature);

struct FeatureStatus {
  bool available = false;
  std::string reason;  // why not (or a detail when available)
};

class FeatureProber {
 public:
  virtual ~FeatureProber() = default;
  virtual FeatureStatus Probe(Feature feature) = 0;
  // Whether the kernel has the tracepoint `name` (e.g. "sched_switch") or, for
  // kprobe/fentry targets, the function `name`; empty reason when present.
  virtual FeatureStatus HasTracepoint(std::string_view name) = 0;
  virtual FeatureStatus HasFunction(std::string_view name) = 0;
};

// Probes the running kernel (results cached per prober).
class KernelFeatureProber : public FeatureProber {
 public:
  KernelFeatureProber();
  ~KernelFeatureProber() override;
  FeatureStatus Probe(Feature feature) override;
  FeatureStatus HasTracepoint(std::string_view name) override;
  FeatureStatus HasFunction(std::string_view name) override;

 private:
  FeatureStatus ProbeUncached(Feature feature);
  ::btf* vmlinux_ = nullptr;
  std::string btf_error_;
  std::map<Feature, FeatureStatus> cache_;
};

// Where tracefs is mounted ("" if nowhere).
std::string TracefsRoot();
// Mounts tracefs at /sys/kernel/tracing if it is nowhere (best effort).
void EnsureTracefs();

// Whether the CPUs have hardware virtualization (vmx or svm in /proc/cpuinfo): KVM then runs
// guests for real and fires kvm_entry/kvm_exit; without it only KVM's instruction emulator runs.
bool CpuHasHardwareVirt(const std::string& cpuinfo_path = "/proc/cpuinfo");

// Kernel facts for `doctor`.
struct KernelFacts {
  std::string release;
  std::string cgroup_mode;  // v1, v2, hybrid, none
  std::string cgroup_v2_root;
  std::string cgroup_v1_cpu_root;
  bool bpf_stats_enabled = false;
};
KernelFacts ReadKernelFacts();

}  // namespace isoscope
