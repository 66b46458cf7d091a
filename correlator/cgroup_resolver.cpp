#include "correlator/cgroup_resolver.hpp"

#include <string>

#include "collectors/identity/cri.hpp"

namespace isoscope::correlator {

CgroupResolver::CgroupResolver(identity::CgroupMounts mounts,
                               identity::WorkloadIndex::Options options)
    : index_(std::move(mounts), std::move(options)) {}

// `missed_path`: the id is not in the snapshot; `missed_name`: its pod or container is not among
// the runtime's names (a pod newer than the snapshot, or a container no runtime of this node runs).
TargetInfo CgroupResolver::DescribeIn(const identity::WorkloadSnapshot& snap, std::uint64_t id,
                                      bool v1, bool* missed_path, bool* missed_name) const {
  TargetInfo info;
  info.cgroup_mode = std::string(identity::CgroupModeName(index_.mounts().mode()));
  if (const std::string* path = snap.PathOf(id, v1)) {
    info.cgroup = *path;
  } else if (id != 0) {
    info.cgroup = (v1 ? "v1-cpu-id:" : "v2-id:") + std::to_string(id);
    *missed_path = true;
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
      } else {
        *missed_name = true;
      }
    }
    if (!info.container_id.empty()) {
      if (const auto* name = snap.ContainerName(info.container_id)) {
        info.container_name = *name;
      } else {
        *missed_name = true;
      }
    }
  }
  return info;
}

TargetInfo CgroupResolver::Describe(std::uint64_t id, bool v1) const {
  bool missed_path = false;
  bool missed_name = false;
  TargetInfo info = DescribeIn(*index_.Current(), id, v1, &missed_path, &missed_name);
  if (missed_path || missed_name) index_.RequestRefresh();
  return info;
}

TargetInfo CgroupResolver::DescribeOrIndex(std::uint64_t id, bool v1) {
  bool missed_path = false;
  bool missed_name = false;
  TargetInfo info = DescribeIn(*index_.Current(), id, v1, &missed_path, &missed_name);
  if (missed_path) {
    // A cgroup born since the last build: walk now, so this interval's report names it.
    missed_name = false;
    return DescribeIn(*index_.RefreshNow(), id, v1, &missed_path, &missed_name);
  }
  if (missed_name) index_.RequestRefresh();  // names only: the background thread catches up
  return info;
}

}  // namespace isoscope::correlator
