// Joins per-thread interval deltas into breakdowns for a target (a process
// or a cgroup subtree) or for every workload cgroup on the node.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <unordered_set>

#include "collectors/container/thread_table.hpp"
#include "correlator/breakdown.hpp"

namespace isoscope::correlator {

struct TargetFilter {
  std::optional<std::uint32_t> tgid;
  // Ids of a cgroup subtree. v1 and v2 hierarchies number their cgroups
  // independently, so the two sets are kept apart.
  std::unordered_set<std::uint64_t> v2_ids;
  std::unordered_set<std::uint64_t> v1_cpu_ids;

  bool Matches(const container::ThreadDelta& t) const;
  bool Matches(std::uint32_t pid, std::uint64_t cgroup_v2_id, std::uint64_t cgroup_v1_cpu_id) const;
};

// Adds the thread-state causes of one thread delta to a breakdown.
void AddThread(Breakdown& b, const container::ThreadDelta& t);

// Breakdown of the matching threads over the sample's window.
Breakdown Aggregate(const container::IntervalSample& sample, const TargetFilter& filter);

// The cgroup a thread is accounted to on the node: its v2 cgroup when it is
// not the root (pure v2, or hybrid with workloads placed in v2), else its
// cpu-controller (v1) cgroup.
struct WorkloadKey {
  std::uint64_t id = 0;
  bool v1 = false;  // id is in the v1 cpu hierarchy
  auto operator<=>(const WorkloadKey&) const = default;
};
WorkloadKey WorkloadOf(std::uint64_t cgroup_v2_id, std::uint64_t cgroup_v1_cpu_id);

// Breakdowns per workload cgroup (agent mode).
std::map<WorkloadKey, Breakdown> AggregateByCgroup(const container::IntervalSample& sample);

}  // namespace isoscope::correlator
