#include "collectors/identity/cri.hpp"

#include <sys/stat.h>
#include <algorithm>
#include <cctype>
#include <set>
#include <utility>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include "runtime/v1/api.grpc.pb.h"

namespace isoscope::identity {
namespace {

namespace cri = ::runtime::v1;

std::string StateName(cri::ContainerState s) {
  switch (s) {
    case cri::CONTAINER_CREATED:
      return "created";
    case cri::CONTAINER_RUNNING:
      return "running";
    case cri::CONTAINER_EXITED:
      return "exited";
    default:
      return "unknown";
  }
}

std::string SocketPath(const std::string& endpoint) {
  constexpr std::string_view kUnix = "unix://";
  if (endpoint.rfind(kUnix, 0) == 0) return endpoint.substr(kUnix.size());
  return endpoint;
}

bool IsSocket(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1);
  std::vector<std::size_t> cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      cur[j] =
          std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string Join(const std::vector<std::string>& v, const std::string& sep = ", ") {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

std::string PodRef(const CriPod& p) { return p.namespace_name + "/" + p.name; }

}  // namespace

struct CriClient::Impl {
  std::unique_ptr<cri::RuntimeService::Stub> stub;
};

const std::vector<std::string>& DefaultCriEndpoints() {
  static const std::vector<std::string> kEndpoints = {"/run/containerd/containerd.sock",
                                                      "/run/crio/crio.sock",
                                                      "/run/k3s/containerd/containerd.sock",
                                                      "/run/cri-dockerd.sock",
                                                      "/var/run/containerd/containerd.sock",
                                                      "/var/run/crio/crio.sock",
                                                      "/var/run/cri-dockerd.sock"};
  return kEndpoints;
}

CriClient::CriClient(std::string endpoint, std::unique_ptr<Impl> impl,
                     std::chrono::milliseconds timeout)
    : endpoint_(std::move(endpoint)), impl_(std::move(impl)), timeout_(timeout) {}

CriClient::~CriClient() = default;

Result<std::unique_ptr<CriClient>> CriClient::Connect(const std::string& endpoint,
                                                      std::chrono::milliseconds timeout) {
  std::vector<std::string> tried;
  const std::vector<std::string> candidates =
      endpoint.empty() ? DefaultCriEndpoints() : std::vector<std::string>{SocketPath(endpoint)};
  for (const auto& path : candidates) {
    if (!IsSocket(path)) {
      if (!endpoint.empty()) tried.push_back(path + " (no socket)");
      continue;
    }
    auto channel = grpc::CreateChannel("unix://" + path, grpc::InsecureChannelCredentials());
    auto impl = std::make_unique<Impl>();
    impl->stub = cri::RuntimeService::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    cri::VersionRequest req;
    req.set_version("v1");
    cri::VersionResponse resp;
    const grpc::Status st = impl->stub->Version(&ctx, req, &resp);
    if (!st.ok()) {
      tried.push_back(fmt::format("{} ({})", path, st.error_message()));
      continue;
    }
    return std::unique_ptr<CriClient>(new CriClient(path, std::move(impl), timeout));
  }
  if (tried.empty()) {
    return MakeError("no CRI runtime socket found (looked for {}); give one with --cri-endpoint",
                     Join(DefaultCriEndpoints()));
  }
  return MakeError("no CRI runtime answered: {}", Join(tried, "; "));
}

Result<CriSnapshot> CriClient::Snapshot() {
  auto deadline = [this](grpc::ClientContext& ctx) {
    ctx.set_deadline(std::chrono::system_clock::now() + timeout_);
  };
  CriSnapshot snap;
  snap.endpoint = endpoint_;
  {
    grpc::ClientContext ctx;
    deadline(ctx);
    cri::VersionRequest req;
    req.set_version("v1");
    cri::VersionResponse resp;
    const auto st = impl_->stub->Version(&ctx, req, &resp);
    if (!st.ok()) return MakeError("CRI Version at {}: {}", endpoint_, st.error_message());
    snap.runtime_name = resp.runtime_name();
    snap.runtime_version = resp.runtime_version();
  }
  {
    grpc::ClientContext ctx;
    deadline(ctx);
    cri::ListPodSandboxRequest req;
    cri::ListPodSandboxResponse resp;
    const auto st = impl_->stub->ListPodSandbox(&ctx, req, &resp);
    if (!st.ok()) return MakeError("CRI ListPodSandbox at {}: {}", endpoint_, st.error_message());
    for (const auto& p : resp.items()) {
      CriPod pod;
      pod.id = p.id();
      pod.name = p.metadata().name();
      pod.namespace_name = p.metadata().namespace_();
      pod.uid = p.metadata().uid();
      pod.attempt = p.metadata().attempt();
      pod.ready = p.state() == cri::SANDBOX_READY;
      pod.created_at_ns = p.created_at();
      pod.runtime_handler = p.runtime_handler();
      pod.labels = {p.labels().begin(), p.labels().end()};
      snap.pods.push_back(std::move(pod));
    }
  }
  {
    grpc::ClientContext ctx;
    deadline(ctx);
    cri::ListContainersRequest req;
    cri::ListContainersResponse resp;
    const auto st = impl_->stub->ListContainers(&ctx, req, &resp);
    if (!st.ok()) return MakeError("CRI ListContainers at {}: {}", endpoint_, st.error_message());
    for (const auto& c : resp.containers()) {
      CriContainer ctr;
      ctr.id = c.id();
      ctr.pod_sandbox_id = c.pod_sandbox_id();
      ctr.name = c.metadata().name();
      ctr.attempt = c.metadata().attempt();
      ctr.state = StateName(c.state());
      ctr.created_at_ns = c.created_at();
      ctr.image = c.image().image();
      snap.containers.push_back(std::move(ctr));
    }
  }
  return snap;
}

Result<std::string> CriClient::PodIp(const std::string& pod_sandbox_id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout_);
  cri::PodSandboxStatusRequest req;
  req.set_pod_sandbox_id(pod_sandbox_id);
  cri::PodSandboxStatusResponse resp;
  const auto st = impl_->stub->PodSandboxStatus(&ctx, req, &resp);
  if (!st.ok()) {
    return MakeError("CRI PodSandboxStatus {} at {}: {}", pod_sandbox_id, endpoint_,
                     st.error_message());
  }
  return resp.status().network().ip();
}

std::vector<const CriContainer*> CriSnapshot::ContainersOf(
    const std::string& pod_sandbox_id) const {
  std::vector<const CriContainer*> out;
  for (const auto& c : containers) {
    if (c.pod_sandbox_id == pod_sandbox_id) out.push_back(&c);
  }
  std::sort(out.begin(), out.end(), [](const CriContainer* a, const CriContainer* b) {
    return a->name != b->name ? a->name < b->name : a->attempt > b->attempt;
  });
  return out;
}

const CriPod* CriSnapshot::PodById(const std::string& pod_sandbox_id) const {
  for (const auto& p : pods) {
    if (p.id == pod_sandbox_id) return &p;
  }
  return nullptr;
}

std::string SandboxOfHandler(const std::string& runtime_handler) {
  const std::string h = Lower(runtime_handler);
  if (h.find("runsc") != std::string::npos || h.find("gvisor") != std::string::npos) {
    return "gvisor";
  }
  if (h.find("kata") != std::string::npos) return "kata";
  for (const char* wasm : {"wasm", "spin", "slight", "lunatic"}) {
    if (h.find(wasm) != std::string::npos) return "wasm";
  }
  return {};
}

std::vector<std::string> CloseMatches(const std::string& name,
                                      const std::vector<std::string>& candidates, std::size_t max) {
  const std::string key = Lower(name);
  std::vector<std::pair<std::size_t, std::string>> scored;
  std::set<std::string> seen;
  for (const auto& c : candidates) {
    if (!seen.insert(c).second) continue;
    // Compare against the name part of "namespace/name".
    const auto slash = c.rfind('/');
    const std::string base = Lower(slash == std::string::npos ? c : c.substr(slash + 1));
    const std::size_t d = EditDistance(key, base);
    const bool contains = !key.empty() && (base.find(key) != std::string::npos ||
                                           key.find(base) != std::string::npos);
    if (contains || d * 3 <= std::max<std::size_t>(key.size(), 3)) {
      scored.emplace_back(contains ? 0 : d, c);
    }
  }
  std::sort(scored.begin(), scored.end());
  std::vector<std::string> out;
  for (const auto& [d, c] : scored) {
    if (out.size() == max) break;
    out.push_back(c);
  }
  return out;
}

PodLookup FindPod(const CriSnapshot& snap, const PodQuery& q, const std::string& node) {
  PodLookup out;
  auto fail = [&](PodLookupError::Kind kind, std::string message,
                  std::vector<std::string> candidates = {}) {
    out.error = PodLookupError{kind, std::move(message), std::move(candidates)};
    return out;
  };
  const std::string where =
      fmt::format("on this node{} ({} {} at {})", node.empty() ? "" : " (" + node + ")",
                  snap.runtime_name.empty() ? "CRI runtime" : snap.runtime_name,
                  snap.runtime_version, snap.endpoint);

  std::vector<const CriPod*> found;
  if (!q.container_id.empty()) {
    const std::string id = Lower(q.container_id);
    if (id.size() < 6) {
      return fail(PodLookupError::Kind::kBadQuery,
                  fmt::format("container id \"{}\" is too short (give at least 6 characters)",
                              q.container_id));
    }
    std::vector<const CriContainer*> hits;
    for (const auto& c : snap.containers) {
      if (c.id.rfind(id, 0) == 0) hits.push_back(&c);
    }
    if (hits.empty()) {
      return fail(PodLookupError::Kind::kNotFound,
                  fmt::format("no container {} {}", q.container_id, where));
    }
    if (hits.size() > 1) {
      std::vector<std::string> ids;
      for (const auto* c : hits) ids.push_back(c->id.substr(0, 12) + " (" + c->name + ")");
      return fail(PodLookupError::Kind::kAmbiguous,
                  fmt::format("container id prefix {} matches {} containers: {}", q.container_id,
                              hits.size(), Join(ids)),
                  ids);
    }
    const CriPod* pod = snap.PodById(hits[0]->pod_sandbox_id);
    if (pod == nullptr) {
      return fail(PodLookupError::Kind::kNotFound,
                  fmt::format("container {} belongs to sandbox {}, which the runtime no longer "
                              "lists",
                              q.container_id, hits[0]->pod_sandbox_id));
    }
    PodMatch m;
    m.pod = *pod;
    m.containers.push_back(*hits[0]);
    out.match = std::move(m);
    return out;
  }

  if (!q.pod_uid.empty()) {
    for (const auto& p : snap.pods) {
      if (Lower(p.uid) == Lower(q.pod_uid)) found.push_back(&p);
    }
    if (found.empty()) {
      return fail(PodLookupError::Kind::kNotFound,
                  fmt::format("no pod with uid {} {}", q.pod_uid, where));
    }
  } else if (!q.name.empty()) {
    std::set<std::string> namespaces_with_name;
    for (const auto& p : snap.pods) {
      if (p.name != q.name) continue;
      namespaces_with_name.insert(p.namespace_name);
      if (q.namespace_name.empty() || p.namespace_name == q.namespace_name) found.push_back(&p);
    }
    if (found.empty()) {
      std::set<std::string> all_ns;
      std::vector<std::string> refs;
      for (const auto& p : snap.pods) {
        all_ns.insert(p.namespace_name);
        refs.push_back(PodRef(p));
      }
      const std::string searched =
          q.namespace_name.empty()
              ? fmt::format("in any namespace (searched: {})",
                            all_ns.empty() ? "none, no pods" : Join({all_ns.begin(), all_ns.end()}))
              : fmt::format("in namespace \"{}\"", q.namespace_name);
      std::string msg = fmt::format("no pod \"{}\" {} {}", q.name, searched, where);
      if (!namespaces_with_name.empty()) {
        msg += fmt::format("; a pod of that name runs in namespace {}",
                           Join({namespaces_with_name.begin(), namespaces_with_name.end()}));
      }
      auto close = CloseMatches(q.name, refs);
      if (!close.empty()) msg += "; did you mean " + Join(close, " or ") + "?";
      msg += ". A pod scheduled on another node is not on this node: run isoscope trace there.";
      return fail(PodLookupError::Kind::kNotFound, msg, close);
    }
    std::set<std::string> ns;
    for (const auto* p : found) ns.insert(p->namespace_name);
    if (ns.size() > 1) {
      std::vector<std::string> refs;
      for (const auto& n : ns) refs.push_back(n + "/" + q.name);
      return fail(PodLookupError::Kind::kAmbiguous,
                  fmt::format("pod \"{}\" exists in {} namespaces ({}): choose one with -n", q.name,
                              ns.size(), Join(refs)),
                  refs);
    }
  } else {
    return fail(PodLookupError::Kind::kBadQuery,
                "no pod given (a pod name, --pod-uid or --container-id)");
  }

  // Several sandboxes of one pod (re-created): the ready one, else the newest.
  std::sort(found.begin(), found.end(), [](const CriPod* a, const CriPod* b) {
    if (a->ready != b->ready) return a->ready;
    return a->created_at_ns > b->created_at_ns;
  });
  PodMatch m;
  m.pod = *found.front();
  m.sandboxes_with_name = found.size();
  std::set<std::string> names;
  for (const auto* c : snap.ContainersOf(m.pod.id)) {
    names.insert(c->name);
    if (q.container.empty() || c->name == q.container) m.containers.push_back(*c);
  }
  if (!q.container.empty() && m.containers.empty()) {
    return fail(
        PodLookupError::Kind::kNoContainer,
        fmt::format("pod {} has no container \"{}\" (containers: {})", PodRef(m.pod), q.container,
                    names.empty() ? "none yet" : Join({names.begin(), names.end()})),
        {names.begin(), names.end()});
  }
  out.match = std::move(m);
  return out;
}

}  // namespace isoscope::identity
