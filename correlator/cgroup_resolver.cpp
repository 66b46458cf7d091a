#include "correlator/cgroup_resolver.hpp"

#include <string>

#include "collectors/identity/cri.hpp"

namespace isoscope::correlator {

CgroupResolver::CgroupResolver(identity::CgroupMounts mounts,
                               identity::WorkloadIndex::Options options,
                               std::chrono::milliseconds span_wait)
    : index_(std::move(mounts), std::move(options)), span_wait_(span_wait) {}

// `missed_path`: the id is not in the snapshot (and not known to be gone); `missed_name`: its pod
// or container is not among the runtime's names (and was not asked for in vain already).
TargetInfo CgroupResolver::DescribeIn(const identity::WorkloadSnapshot& snap, std::uint64_t id,
                                      bool v1, bool* missed_path, bool* missed_name) const {
  TargetInfo info;
  info.cgroup_mode = std::string(identity::CgroupModeName(index_.mounts().mode()));
  if (const std::string* path = snap.PathOf(id, v1)) {
    info.cgroup = *path;
  } else if (id != 0) {
    info.cgroup = (v1 ? "v1-cpu-id:" : "v2-id:") + std::to_string(id);
    *missed_path = !snap.Gone(id, v1);
  }
  const auto ident = identity::ParseCgroupPath(info.cgroup);
  info.pod_uid = ident.pod_uid;
  info.container_id = ident.container_id;
  // Names only where a runtime answered: a node without one is not a miss.
  if (!snap.cri_endpoint.empty()) {
    if (!info.pod_uid.empty()) {
      if (const auto* pod = snap.Pod(info.pod_uid)) {
        info.namespace_name = pod->namespace_name;
        info.pod_name = pod->name;
        info.sandbox = identity::SandboxOfHandler(pod->runtime_handler);
      } else if (!snap.unnamed.count(info.pod_uid)) {
        *missed_name = true;
      }
    }
    if (!info.container_id.empty()) {
      if (const auto* name = snap.ContainerName(info.container_id)) {
        info.container_name = *name;
      } else if (!snap.unnamed.count(info.container_id)) {
        *missed_name = true;
      }
    }
  }
  return info;
}

void CgroupResolver::Report(const TargetInfo& info, std::uint64_t id, bool v1, bool missed_path,
                            bool missed_name) const {
  if (missed_path) index_.ReportMissingPath(id, v1);
  if (missed_name) {
    if (!info.pod_uid.empty()) index_.ReportUnnamed(info.pod_uid);
    if (!info.container_id.empty()) index_.ReportUnnamed(info.container_id);
  }
}

TargetInfo CgroupResolver::Describe(std::uint64_t id, bool v1) const {
  bool missed_path = false;
  bool missed_name = false;
  auto snap = index_.Current();
  TargetInfo info = DescribeIn(*snap, id, v1, &missed_path, &missed_name);
  if (!missed_path && !missed_name) return info;
  // Once per new workload: ask for a rebuild and wait for it, bounded, on the index's publish
  // condition (the walk runs on the background thread under a lock this thread never takes).
  Report(info, id, v1, missed_path, missed_name);
  snap = index_.WaitNewerThan(snap->generation, span_wait_);
  missed_path = missed_name = false;
  return DescribeIn(*snap, id, v1, &missed_path, &missed_name);
}

TargetInfo CgroupResolver::DescribeOrIndex(std::uint64_t id, bool v1) {
  bool missed_path = false;
  bool missed_name = false;
  TargetInfo info = DescribeIn(*index_.Current(), id, v1, &missed_path, &missed_name);
  if (missed_path) {
    // A cgroup born since the last build: walk now, so this interval's report names it.
    index_.ReportMissingPath(id, v1);
    missed_path = missed_name = false;
    return DescribeIn(*index_.RefreshNow(), id, v1, &missed_path, &missed_name);
  }
  if (missed_name) Report(info, id, v1, false, true);  // the background thread catches up
  return info;
}

}  // namespace isoscope::correlator
