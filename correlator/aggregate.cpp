#include "correlator/aggregate.hpp"

namespace isoscope::correlator {

bool TargetFilter::Matches(const container::ThreadDelta& t) const {
  return Matches(t.tgid, t.cgroup_v2_id, t.cgroup_v1_cpu_id);
}

bool TargetFilter::Matches(std::uint32_t pid, std::uint64_t cgroup_v2_id,
                           std::uint64_t cgroup_v1_cpu_id) const {
  if (tgid && pid != *tgid) return false;
  if (v2_ids.empty() && v1_cpu_ids.empty()) return true;
  return v2_ids.count(cgroup_v2_id) > 0 || v1_cpu_ids.count(cgroup_v1_cpu_id) > 0;
}

void AddThread(Breakdown& b, const container::ThreadDelta& t) {
  double total = 0;
  for (std::size_t c = 0; c < t.ns.size(); ++c) {
    const double s = static_cast<double>(t.ns[c]) / 1e9;
    b.seconds[c] += s;
    total += s;
  }
  b.thread_seconds += total;
  ++b.threads;
}

Breakdown Aggregate(const container::IntervalSample& sample, const TargetFilter& filter) {
  Breakdown b;
  b.interval_s = static_cast<double>(sample.end_ns - sample.start_ns) / 1e9;
  for (const auto& t : sample.threads) {
    if (filter.Matches(t)) AddThread(b, t);
  }
  return b;
}

WorkloadKey WorkloadOf(std::uint64_t cgroup_v2_id, std::uint64_t cgroup_v1_cpu_id) {
  if (cgroup_v2_id > 1 || cgroup_v1_cpu_id == 0) return {cgroup_v2_id, false};
  return {cgroup_v1_cpu_id, true};
}

std::map<WorkloadKey, Breakdown> AggregateByCgroup(const container::IntervalSample& sample) {
  std::map<WorkloadKey, Breakdown> out;
  const double interval_s = static_cast<double>(sample.end_ns - sample.start_ns) / 1e9;
  for (const auto& t : sample.threads) {
    Breakdown& b = out[WorkloadOf(t.cgroup_v2_id, t.cgroup_v1_cpu_id)];
    b.interval_s = interval_s;
    AddThread(b, t);
  }
  return out;
}

}  // namespace isoscope::correlator
