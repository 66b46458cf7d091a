// `isoscope trace POD [-n NS] [-c CONTAINER]`, `--pod-uid UID`, `--container-id ID`: a
// Kubernetes pod (or some of its containers) as a trace target, resolved on the node through the
// container runtime's CRI socket (collectors/identity/cri.hpp) and the cgroup hierarchies, and
// followed while traced: a restarted container (new id, next attempt) is picked up and named in
// the interval's notes, and a deleted pod ends the trace.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "collectors/identity/cgroup_identity.hpp"
#include "collectors/identity/cri.hpp"
#include "common/result.hpp"
#include "correlator/breakdown.hpp"

namespace isoscope {

struct PodTargetOptions {
  identity::PodQuery query;
  std::string cri_endpoint;  // "" = probe the usual sockets
};

// Why a pod target failed: `usage` errors (no such pod, ambiguous name) exit 2, others 1.
struct PodTargetError {
  Error error;
  bool usage = true;
};

class PodTarget {
 public:
  static std::variant<std::unique_ptr<PodTarget>, PodTargetError> Resolve(
      const PodTargetOptions& options, const identity::CgroupMounts& mounts);

  const correlator::TargetInfo& info() const { return info_; }
  const identity::WorkloadDirs& dirs() const { return dirs_; }
  // The pod (or its selected containers) no longer exists; Follow said so in a note.
  bool gone() const { return gone_; }
  // Asks the runtime again (no-op without one): follows restarts and re-created sandboxes,
  // updates info() and dirs(), and returns one note per change since the last call.
  std::vector<std::string> Follow();

  // The node's name for messages: $NODE_NAME (the DaemonSet's downward API), else the host name.
  static std::string NodeName();

 private:
  struct Seen {
    std::string id;
    std::uint32_t attempt = 0;
    std::string state;
  };
  PodTarget() = default;
  void Adopt(const identity::PodMatch& match);
  std::string SelectedContainerId() const;

  PodTargetOptions options_;
  identity::CgroupMounts mounts_;
  std::unique_ptr<identity::CriClient> cri_;
  identity::CriPod pod_;
  std::map<std::string, Seen> containers_;  // by container name: the newest attempt
  std::map<std::string, Seen> removed_;     // names removed and not back yet
  correlator::TargetInfo info_;
  identity::WorkloadDirs dirs_;
  bool gone_ = false;
};

}  // namespace isoscope
