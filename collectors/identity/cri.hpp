// Pods and containers by name, from the node's container runtime over the Kubernetes Container
// Runtime Interface (CRI runtime.v1, read-only calls: Version, ListPodSandbox, ListContainers,
// PodSandboxStatus), without the API server.
//
//   CriClient    the gRPC client over the runtime's unix socket (containerd, CRI-O); Connect
//                probes the usual socket paths unless one is given.
//   CriSnapshot  what the runtime knows at one moment: every pod sandbox and container.
//   FindPod      resolves `isoscope trace POD [-n NS] [-c CONTAINER]`, --pod-uid and
//                --container-id against a snapshot, with the errors a user needs (no such pod,
//                the same name in several namespaces, no such container).
//
// The messages are isoscope's own (collectors/identity/proto/runtime/v1/api.proto, written from
// the CRI specification's field numbers).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace isoscope::identity {

struct CriPod {
  std::string id;    // sandbox id (64 hex for containerd)
  std::string name;  // metadata.name: the Kubernetes pod name
  std::string namespace_name;
  std::string uid;  // metadata.uid: the pod UID
  std::uint32_t attempt = 0;
  bool ready = false;  // SANDBOX_READY
  std::int64_t created_at_ns = 0;
  std::string runtime_handler;  // RuntimeClass handler ("" = the runtime's default, "runsc"...)
  std::map<std::string, std::string> labels;
};

struct CriContainer {
  std::string id;
  std::string pod_sandbox_id;
  std::string name;  // metadata.name: the container name in the pod spec
  std::uint32_t attempt = 0;
  std::string state;  // "created", "running", "exited", "unknown"
  std::int64_t created_at_ns = 0;
  std::string image;
};

struct CriSnapshot {
  std::string endpoint;      // the socket that answered
  std::string runtime_name;  // VersionResponse.runtime_name ("containerd", "cri-o")
  std::string runtime_version;
  std::vector<CriPod> pods;
  std::vector<CriContainer> containers;

  // The containers of one sandbox, newest attempt first within a name.
  std::vector<const CriContainer*> ContainersOf(const std::string& pod_sandbox_id) const;
  const CriPod* PodById(const std::string& pod_sandbox_id) const;
};

// The socket paths probed when no endpoint is given, in order (containerd, CRI-O, cri-dockerd,
// under /run and /var/run).
const std::vector<std::string>& DefaultCriEndpoints();

class CriClient {
 public:
  // `endpoint`: "unix:///path", "/path", or "" to probe DefaultCriEndpoints (the first socket
  // that answers Version). Fails naming every endpoint tried and why.
  static Result<std::unique_ptr<CriClient>> Connect(
      const std::string& endpoint,
      std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));
  ~CriClient();
  CriClient(const CriClient&) = delete;
  CriClient& operator=(const CriClient&) = delete;

  const std::string& endpoint() const { return endpoint_; }
  // Version + ListPodSandbox + ListContainers.
  Result<CriSnapshot> Snapshot();
  // The pod's IP (PodSandboxStatus.network.ip), "" for a host-network pod.
  Result<std::string> PodIp(const std::string& pod_sandbox_id);

 private:
  struct Impl;
  CriClient(std::string endpoint, std::unique_ptr<Impl> impl, std::chrono::milliseconds timeout);
  std::string endpoint_;
  std::unique_ptr<Impl> impl_;
  std::chrono::milliseconds timeout_;
};

// The sandbox runtime a RuntimeClass handler names, as trace and the metrics call it: "gvisor"
// (runsc), "kata" (kata, kata-qemu, kata-fc...), "wasm" (wasmedge, wasmtime, spin, crun-wasm...);
// "" for runc and unknown handlers (no sandbox layer).
std::string SandboxOfHandler(const std::string& runtime_handler);

// ---- resolving a pod target ------------------------------------------------------------------

struct PodQuery {
  std::string name;            // pod name; "" when pod_uid or container_id is given
  std::string namespace_name;  // "" = every namespace
  std::string container;       // container name; "" = every container of the pod
  std::string pod_uid;
  std::string container_id;  // full id or a unique prefix (>= 6 hex)
};

struct PodMatch {
  CriPod pod;
  // The pod's containers that the query selects (every attempt of the selected names), newest
  // attempt first within a name; empty when the pod has none yet.
  std::vector<CriContainer> containers;
  // More than one sandbox had this name (a pod re-created): the ready one, else the newest, won.
  std::size_t sandboxes_with_name = 1;
};

// What failed, for the exit code and the message (`message` is the whole sentence a user sees).
struct PodLookupError {
  enum class Kind { kNotFound, kAmbiguous, kNoContainer, kBadQuery } kind = Kind::kNotFound;
  std::string message;
  std::vector<std::string> candidates;  // "namespace/name" close matches, or the namespaces
};

// Resolves a query against a snapshot. Sandboxes that are not ready are still found (a pod
// being torn down or re-created), but a ready sandbox of the same pod wins.
// `node` names this node in messages ("" leaves it out).
struct PodLookup {
  std::optional<PodMatch> match;
  PodLookupError error;
};
PodLookup FindPod(const CriSnapshot& snapshot, const PodQuery& query, const std::string& node);

// Up to `max` of `candidates` closest to `name` (edit distance <= a third of the name's length,
// or one contains the other), closest first.
std::vector<std::string> CloseMatches(const std::string& name,
                                      const std::vector<std::string>& candidates,
                                      std::size_t max = 3);

}  // namespace isoscope::identity
