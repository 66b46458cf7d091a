#include "correlator/vcpu.hpp"

#include <algorithm>
#include <map>
#include <tuple>

#include "collectors/hypervisor/exit_reasons.hpp"

namespace isoscope::correlator {
namespace {

constexpr double Seconds(std::uint64_t ns) { return static_cast<double>(ns) / 1e9; }

void Add(VcpuTimes& into, const VcpuTimes& t) {
  into.guest_s += t.guest_s;
  into.vmexit_s += t.vmexit_s;
  into.vmm_exit_s += t.vmm_exit_s;
  into.halted_s += t.halted_s;
  into.steal_s += t.steal_s;
  into.exits += t.exits;
}

}  // namespace

VcpuSection BuildVcpuSection(const container::IntervalSample& sample, const TargetFilter& filter) {
  VcpuSection out;
  std::map<std::uint32_t, VcpuThread> threads;
  for (const auto& t : sample.threads) {
    if (!t.vcpu || !filter.Matches(t)) continue;
    VcpuThread& v = threads[t.tid];
    v.tid = t.tid;
    v.comm = t.comm;
    v.times.guest_s += Seconds(t.ns[ISO_CAUSE_APP_ON_CPU]);
    v.times.vmexit_s += Seconds(t.ns[ISO_CAUSE_HYPERVISOR_VMEXIT]);
    v.times.vmm_exit_s += Seconds(t.ns[ISO_CAUSE_PARAVIRT_VMM_EXIT]);
    v.times.halted_s += Seconds(t.halted_ns);
    v.times.steal_s += Seconds(t.ns[ISO_CAUSE_HYPERVISOR_STEAL]);
  }
  std::map<std::tuple<std::string_view, std::string_view, std::string_view>, VmExitRow> rows;
  for (const auto& e : sample.vm_exits) {
    if (!filter.Matches(e.tgid, e.cgroup_v2_id, e.cgroup_v1_cpu_id)) continue;
    const auto kind = hypervisor::ExitKind(e.isa);
    const auto isa = hypervisor::IsaName(e.isa);
    const auto reason = hypervisor::ExitReasonName(e.isa, e.reason);
    VmExitRow& row = rows[{kind, isa, reason}];
    row.reason = reason;
    row.kind = kind;
    row.isa = isa;
    row.count += e.count;
    row.seconds += Seconds(e.ns);
    if (auto it = threads.find(e.tid); it != threads.end()) it->second.times.exits += e.count;
  }
  for (auto& [tid, v] : threads) {
    Add(out.total, v.times);
    out.per_thread.push_back(std::move(v));
  }
  out.threads = static_cast<std::uint32_t>(out.per_thread.size());
  for (auto& [key, row] : rows) out.exits.push_back(std::move(row));
  std::stable_sort(out.exits.begin(), out.exits.end(),
                   [](const VmExitRow& a, const VmExitRow& b) { return a.count > b.count; });
  return out;
}

NodeStealSection BuildNodeSteal(const container::IntervalSample& sample) {
  NodeStealSection out;
  out.measured = sample.node_steal.measured;
  out.kernel_s = Seconds(sample.node_steal.kernel_ns);
  out.idle_s = Seconds(sample.node_steal.idle_ns);
  // A vCPU thread's hypervisor.steal is mostly host-side (runnable, not running), not the
  // steal clock of this node's CPUs: left out.
  for (const auto& t : sample.threads) {
    if (!t.vcpu) out.threads_s += Seconds(t.ns[ISO_CAUSE_HYPERVISOR_STEAL]);
  }
  return out;
}

}  // namespace isoscope::correlator
