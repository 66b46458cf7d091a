#include "agent/pod_target.hpp"

#include <unistd.h>
#include <cstdlib>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace isoscope {
namespace {

std::string Short(const std::string& id) { return id.substr(0, 12); }

// The cgroup path shown for the target: relative to its hierarchy root.
std::string RelativeCgroup(const identity::WorkloadDirs& dirs, const identity::CgroupMounts& m) {
  if (auto v2 = identity::RelativeTo(dirs.v2_dir, m.v2_root); !v2.empty()) return v2;
  const auto cpu = m.v1_roots.find("cpu");
  return cpu == m.v1_roots.end() ? std::string{} : identity::RelativeTo(dirs.v1_cpu_dir, cpu->second);
}

bool Exists(const std::string& dir) { return !dir.empty() && access(dir.c_str(), F_OK) == 0; }

std::string Roots(const identity::CgroupMounts& m) {
  std::string out = m.v2_root;
  if (const auto cpu = m.v1_roots.find("cpu"); cpu != m.v1_roots.end()) {
    out += (out.empty() ? "" : " and ") + cpu->second;
  }
  return out.empty() ? "no cgroup hierarchy" : out;
}

}  // namespace

std::string PodTarget::NodeName() {
  if (const char* env = std::getenv("NODE_NAME"); env != nullptr && *env != '\0') return env;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) == 0) return host;
  return {};
}

std::variant<std::unique_ptr<PodTarget>, PodTargetError> PodTarget::Resolve(
    const PodTargetOptions& options, const identity::CgroupMounts& mounts) {
  std::unique_ptr<PodTarget> t(new PodTarget());
  t->options_ = options;
  t->mounts_ = mounts;
  const identity::PodQuery& q = options.query;
  const bool needs_runtime = !q.name.empty() || !q.container_id.empty() || !q.container.empty();

  auto client = identity::CriClient::Connect(options.cri_endpoint);
  if (!client) {
    if (needs_runtime) {
      const std::string what = !q.name.empty()           ? "pod \"" + q.name + "\""
                               : !q.container_id.empty() ? "container " + q.container_id
                                                         : "container \"" + q.container + "\"";
      return PodTargetError{MakeError("cannot find {} without the container runtime: {} (--pod-uid "
                                      "UID works without one)",
                                      what, client.error().message),
                            false};
    }
    // --pod-uid without a runtime: the cgroup index alone.
    spdlog::debug("no CRI runtime ({}); finding pod {} by its cgroup", client.error().message,
                  q.pod_uid);
    t->dirs_ = identity::FindPodDirs(mounts, q.pod_uid);
    if (t->dirs_.empty()) {
      return PodTargetError{
          MakeError("no pod with uid {} on this node ({}): no cgroup "
                    "pod{} in {}, and no CRI runtime to ask ({})",
                    q.pod_uid, NodeName(), q.pod_uid, Roots(mounts), client.error().message)};
    }
    t->info_.pod_uid =
        identity::ParseCgroupPath(t->dirs_.v2_dir.empty() ? t->dirs_.v1_cpu_dir : t->dirs_.v2_dir)
            .pod_uid;
    t->info_.cgroup = RelativeCgroup(t->dirs_, mounts);
    return t;
  }
  t->cri_ = std::move(*client);
  auto snap = t->cri_->Snapshot();
  if (!snap) return PodTargetError{snap.error(), false};
  const auto found = identity::FindPod(*snap, q, NodeName());
  if (!found.match) return PodTargetError{Error{found.error.message}};
  // Followed by name from here on: a restarted container gets a new id.
  if (!q.container_id.empty() && !found.match->containers.empty()) {
    t->options_.query.container = found.match->containers.front().name;
    t->options_.query.container_id.clear();
  }
  t->Adopt(*found.match);
  if (t->dirs_.empty()) {
    return PodTargetError{
        MakeError(
            "pod {}/{} (uid {}) is known to {} but has no cgroup in {}{}",
            found.match->pod.namespace_name, found.match->pod.name, found.match->pod.uid,
            snap->runtime_name, Roots(mounts),
            t->info_.container_id.empty() ? "" : " for container " + Short(t->info_.container_id)),
        false};
  }
  return t;
}

std::string PodTarget::SelectedContainerId() const {
  if (options_.query.container.empty()) return {};
  const auto it = containers_.find(options_.query.container);
  return it == containers_.end() ? std::string{} : it->second.id;
}

void PodTarget::Adopt(const identity::PodMatch& match) {
  pod_ = match.pod;
  containers_.clear();
  for (const auto& c : match.containers) {  // newest attempt first within a name
    if (!containers_.count(c.name)) containers_[c.name] = Seen{c.id, c.attempt, c.state};
  }
  info_.pod_uid = identity::CanonicalPodUid(pod_.uid);
  if (info_.pod_uid.empty()) info_.pod_uid = pod_.uid;
  info_.namespace_name = pod_.namespace_name;
  info_.pod_name = pod_.name;
  info_.sandbox = identity::SandboxOfHandler(pod_.runtime_handler);
  info_.container_name = options_.query.container;
  const std::string previous_id = info_.container_id;
  info_.container_id = SelectedContainerId();
  // The hierarchies are walked only when the target changed (another container attempt) or its
  // directories went away, not at every interval's Follow.
  const bool same = !dirs_.empty() && info_.container_id == previous_id &&
                    (Exists(dirs_.v2_dir) || Exists(dirs_.v1_cpu_dir));
  if (!same) {
    const identity::WorkloadDirs dirs =
        info_.container_id.empty() ? identity::FindPodDirs(mounts_, pod_.uid)
                                   : identity::FindContainerDirs(mounts_, info_.container_id);
    // A container between attempts has no cgroup: keep tracing the last one until the next exists.
    if (!dirs.empty() || dirs_.empty()) dirs_ = dirs;
  }
  info_.cgroup = RelativeCgroup(dirs_, mounts_);
}

std::vector<std::string> PodTarget::Follow() {
  std::vector<std::string> notes;
  if (!cri_ || gone_) return notes;
  auto snap = cri_->Snapshot();
  if (!snap) {
    spdlog::warn("following pod {}/{}: {} (keeping the last known containers)", pod_.namespace_name,
                 pod_.name, snap.error().message);
    return notes;
  }
  identity::PodQuery q;
  q.pod_uid = pod_.uid;
  const auto found = identity::FindPod(*snap, q, "");
  if (!found.match) {
    gone_ = true;
    notes.push_back(
        fmt::format("pod {}/{} is gone from this node", pod_.namespace_name, pod_.name));
    return notes;
  }
  if (found.match->pod.id != pod_.id) {
    notes.push_back(fmt::format("pod sandbox re-created: {} -> {}", Short(pod_.id),
                                Short(found.match->pod.id)));
  }
  identity::PodMatch match = *found.match;
  if (!options_.query.container.empty()) {
    std::erase_if(match.containers, [&](const identity::CriContainer& c) {
      return c.name != options_.query.container;
    });
  }
  const auto before = containers_;
  Adopt(match);
  for (const auto& [name, now] : containers_) {
    const auto was = before.find(name);
    if (was == before.end()) {
      // Removed at an earlier look and back now: the restart, seen in two steps.
      if (const auto gone = removed_.find(name); gone != removed_.end()) {
        notes.push_back(fmt::format("container {} restarted: attempt {} -> {}, id {} -> {}", name,
                                    gone->second.attempt, now.attempt, Short(gone->second.id),
                                    Short(now.id)));
        removed_.erase(gone);
      } else {
        notes.push_back(fmt::format("container {} started (attempt {}, id {})", name, now.attempt,
                                    Short(now.id)));
      }
    } else if (was->second.id != now.id) {
      notes.push_back(fmt::format("container {} restarted: attempt {} -> {}, id {} -> {}", name,
                                  was->second.attempt, now.attempt, Short(was->second.id),
                                  Short(now.id)));
    } else if (was->second.state != now.state && now.state != "running") {
      notes.push_back(fmt::format("container {} {}", name, now.state));
    }
  }
  for (const auto& [name, was] : before) {
    if (!containers_.count(name)) {
      notes.push_back(fmt::format("container {} removed (id {})", name, Short(was.id)));
      removed_[name] = was;
    }
  }
  return notes;
}

}  // namespace isoscope
