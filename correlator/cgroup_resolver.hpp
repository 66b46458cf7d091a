// Names the cgroup ids seen in records: path, pod UID and container ID (from the path, for v1,
// v2 and hybrid hosts alike) and, where the container runtime knows them, the Kubernetes
// namespace, pod and container names and the pod's sandbox runtime (collectors/identity/
// workload_index.hpp). Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "collectors/identity/cgroup_identity.hpp"
#include "collectors/identity/workload_index.hpp"
#include "correlator/breakdown.hpp"

namespace isoscope::correlator {

class CgroupResolver {
 public:
  explicit CgroupResolver(identity::CgroupMounts mounts,
                          identity::WorkloadIndex::Options options = {},
                          std::chrono::milliseconds span_wait = std::chrono::milliseconds(300));

  // For the span path (OTLP receiver threads): takes no lock a cgroup walk or a runtime call
  // holds. An id or pod not in the snapshot asks the background thread for a rebuild and waits
  // for it at most `span_wait` (once per new workload: what the rebuild still cannot name is
  // remembered and not asked for again); what stays unknown is named as far as known
  // ("v2-id:<n>" / "v1-cpu-id:<n>" for an unknown cgroup).
  TargetInfo Describe(std::uint64_t id, bool v1) const;
  // For the drain thread: an unknown id first rebuilds the index in this thread (at most once per
  // min_rebuild), so a cgroup born in this interval is named in this interval's report; a known
  // cgroup whose pod or container the runtime has not named yet only asks for a rebuild.
  TargetInfo DescribeOrIndex(std::uint64_t id, bool v1);

  const identity::CgroupMounts& mounts() const { return index_.mounts(); }
  identity::WorkloadIndex& index() { return index_; }

 private:
  void Report(const TargetInfo& info, std::uint64_t id, bool v1, bool missed_path,
              bool missed_name) const;
  TargetInfo DescribeIn(const identity::WorkloadSnapshot& snap, std::uint64_t id, bool v1,
                        bool* missed_path, bool* missed_name) const;
  // mutable: Describe() only asks the index for a rebuild, which does not change what it means.
  mutable identity::WorkloadIndex index_;
  std::chrono::milliseconds span_wait_;
};

}  // namespace isoscope::correlator
