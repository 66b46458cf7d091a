#include "correlator/cgroup_resolver.hpp"

namespace isoscope::correlator {

void CgroupResolver::Reindex() {
  v2_paths_.clear();
  v1_paths_.clear();
  if (!mounts_.v2_root.empty()) v2_paths_ = identity::IndexHierarchy(mounts_.v2_root);
  auto cpu = mounts_.v1_roots.find("cpu");
  if (cpu != mounts_.v1_roots.end()) v1_paths_ = identity::IndexHierarchy(cpu->second);
  last_index_ = std::chrono::steady_clock::now();
  indexed_ = true;
}

std::string CgroupResolver::PathOf(std::uint64_t id, bool v1) {
  auto lookup = [&]() -> const std::string* {
    const auto& paths = v1 ? v1_paths_ : v2_paths_;
    auto it = paths.find(id);
    return it == paths.end() ? nullptr : &it->second;
  };
  if (const std::string* p = lookup()) return *p;
  if (!indexed_ || std::chrono::steady_clock::now() - last_index_ > std::chrono::seconds(5)) {
    Reindex();
    if (const std::string* p = lookup()) return *p;
  }
  return {};
}

correlator::TargetInfo CgroupResolver::Describe(std::uint64_t id, bool v1) {
  correlator::TargetInfo info;
  info.cgroup = PathOf(id, v1);
  if (info.cgroup.empty() && id != 0)
    info.cgroup = (v1 ? "v1-cpu-id:" : "v2-id:") + std::to_string(id);
  const auto ident = identity::ParseCgroupPath(info.cgroup);
  info.pod_uid = ident.pod_uid;
  info.container_id = ident.container_id;
  info.cgroup_mode = std::string(identity::CgroupModeName(mounts_.mode()));
  return info;
}

}  // namespace isoscope::correlator
