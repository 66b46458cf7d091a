// Maps cgroup ids seen in records to paths and workload identity (pod UID,
// container ID), for v1, v2 and hybrid hosts alike.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>

#include "collectors/identity/cgroup_identity.hpp"
#include "correlator/breakdown.hpp"

namespace isoscope::correlator {

class CgroupResolver {
 public:
  explicit CgroupResolver(identity::CgroupMounts mounts) : mounts_(std::move(mounts)) {}
  // Path (relative to its hierarchy root, e.g. "/kubepods/burstable/pod…/…")
  // of a cgroup id; empty when unknown even after a re-index (re-indexing is
  // rate-limited to once per 5 s).
  // v1 selects the cpu controller's v1 hierarchy, else the v2 hierarchy.
  std::string PathOf(std::uint64_t id, bool v1);
  // TargetInfo with cgroup path, pod UID and container ID filled when known.
  correlator::TargetInfo Describe(std::uint64_t id, bool v1);
  const identity::CgroupMounts& mounts() const { return mounts_; }

 private:
  void Reindex();
  identity::CgroupMounts mounts_;
  std::unordered_map<std::uint64_t, std::string> v2_paths_;
  std::unordered_map<std::uint64_t, std::string> v1_paths_;
  std::chrono::steady_clock::time_point last_index_{};
  bool indexed_ = false;
};

}  // namespace isoscope::correlator
