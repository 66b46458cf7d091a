// Breakdowns and verdicts: how a target's measured time splits over causes,
// and which layer to blame (shared/TAXONOMY.md, "Verdict").
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "isoscope/abi.hpp"

namespace isoscope::correlator {

// Seconds per cause (indexed by enum iso_cause) over one window.
struct Breakdown {
  double interval_s = 0;      // wall-clock length of the window
  double thread_seconds = 0;  // sum over the target's threads of the time measured
  std::uint32_t threads = 0;  // threads that contributed
  std::array<double, ISO_CAUSE_MAX> seconds{};

  double Share(abi::Cause cause) const {
    return thread_seconds > 0 ? seconds[cause] / thread_seconds : 0.0;
  }
  Breakdown& operator+=(const Breakdown& other);
};

struct Verdict {
  std::optional<abi::Cause> cause;  // nullopt = "none"
  double share = 0;                 // of thread_seconds
  double confidence = 0;            // [0, 1]
};

// Blame threshold: a blamable cause must exceed this share to be the verdict.
inline constexpr double kVerdictThreshold = 0.10;

// The dominant cause outside the `app` layer when its share exceeds
// kVerdictThreshold, else none. Confidence (docs/verdicts.md) is
//   coverage * dominance
// where coverage = thread_seconds / (threads * interval_s), capped at 1 (how
// much of the window the evidence covers), and dominance = top / (top +
// runner-up) over blamable causes (1 when there is no runner-up). A `none`
// verdict's confidence is coverage * (1 - top_share / kVerdictThreshold / 2).
Verdict ComputeVerdict(const Breakdown& breakdown);

// Identity of what a breakdown is about; empty strings when unknown.
struct TargetInfo {
  std::optional<std::int32_t> pid;
  std::string cgroup;        // path given by the user or resolved from ids
  std::string pod_uid;
  std::string container_id;
  std::string comm;
  std::string cgroup_mode;   // "v1", "v2", "hybrid"
  // Kubernetes names, from the container runtime (CRI) when it knows the pod; empty otherwise.
  std::string namespace_name;
  std::string pod_name;
  std::string container_name;  // empty for a whole-pod target
  std::string sandbox;         // the pod's sandbox runtime from its RuntimeClass handler
                               // ("gvisor", "kata"); empty for plain runc
};

// The target's network time in one interval (docs/network.md, "Per target"):
// network intervals of its flows, which overlap its threads' own time, so
// they are reported beside the thread breakdown, not inside it.
struct NetworkRow {
  abi::Cause cause = 0;  // network.<slice>.<mechanism>
  double seconds = 0;
  double share = 0;  // of total_seconds
};
struct NetworkSection {
  bool measured = false;  // network evidence was collected for this target
  std::size_t flows = 0;  // the target's TCP flows this interval
  std::vector<NetworkRow> rows;  // by seconds, largest first
  double total_seconds = 0;
  std::uint64_t retransmits = 0;
  std::uint64_t retransmits_spurious = 0;      // of retransmits: the receiver already had the data
  std::map<std::string, std::uint64_t> drops;  // by kernel drop reason name
};

// The target's vCPU threads in one interval (docs/hypervisor.md, "Host side"): their wall
// time by vCPU state (also inside the breakdown, under its causes) and their exits by reason.
struct VcpuTimes {
  double guest_s = 0;     // in the guest: app.on_cpu of a vCPU thread
  double vmexit_s = 0;    // the kernel handling exits: hypervisor.vmexit
  double vmm_exit_s = 0;  // the VMM handling exits: paravirt.vmm_exit
  double halted_s = 0;    // asleep in the kernel (guest HLT): app.blocked_other
  double steal_s = 0;     // runnable, not running: hypervisor.steal
  std::uint64_t exits = 0;
};
struct VcpuThread {
  std::uint32_t tid = 0;
  std::string comm;
  VcpuTimes times;
};
struct VmExitRow {
  std::string reason;  // "io", "hlt", ... (collectors/hypervisor/exit_reasons.hpp)
  std::string kind;    // "kernel" (kvm_exit) or "vmm" (kvm_userspace_exit)
  std::string isa;     // "vmx", "svm", "" for vmm
  std::uint64_t count = 0;
  double seconds = 0;  // until handled: next entry (kernel) or next KVM_RUN (vmm)
};
struct VcpuSection {
  std::uint32_t threads = 0;  // 0: the target had no vCPU thread this interval
  VcpuTimes total;
  std::vector<VmExitRow> exits;       // by count, largest first
  std::vector<VcpuThread> per_thread;  // by tid
};

// Node-wide steal in one interval (guest side, docs/hypervisor.md): what the kernel counted
// (/proc/stat) and where the agent put it (threads' hypervisor.steal, idle CPUs).
struct NodeStealSection {
  bool measured = false;
  double kernel_s = 0;
  double threads_s = 0;  // every tracked thread of the node, not only the target's
  double idle_s = 0;
};

// One request (a span the agent joined) of the target.
struct RequestReport {
  std::string trace_id;  // lower-case hex
  std::string span_id;
  std::string binding;  // "thread", "process", ...
  Breakdown breakdown;  // one partition of the span: interval_s = duration
  Verdict verdict;
};

// One interval's result for one target: what `trace` prints and exporters send.
struct IntervalReport {
  TargetInfo target;
  std::uint64_t start_ns = 0;  // CLOCK_BOOTTIME
  std::uint64_t end_ns = 0;
  Breakdown breakdown;
  Verdict verdict;
  NetworkSection network;
  VcpuSection vcpus;
  NodeStealSection node;
  std::vector<RequestReport> requests;  // spans that ended in this interval
  // What changed in the target during the interval, for the reader ("container app restarted:
  // attempt 0 -> 1, id 3f1a... -> 9c2e..."); empty most of the time.
  std::vector<std::string> notes;
};

}  // namespace isoscope::correlator
