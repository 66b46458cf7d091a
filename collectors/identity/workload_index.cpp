#include "collectors/identity/workload_index.hpp"

#include <spdlog/spdlog.h>

namespace isoscope::identity {

const std::string* WorkloadSnapshot::PathOf(std::uint64_t id, bool v1_cpu) const {
  const auto& paths = v1_cpu ? v1_cpu_paths : v2_paths;
  const auto it = paths.find(id);
  return it == paths.end() ? nullptr : &it->second;
}

const PodNames* WorkloadSnapshot::Pod(const std::string& canonical_uid) const {
  const auto it = pods.find(canonical_uid);
  return it == pods.end() ? nullptr : &it->second;
}

const std::string* WorkloadSnapshot::ContainerName(const std::string& container_id) const {
  const auto it = containers.find(container_id);
  return it == containers.end() ? nullptr : &it->second;
}

WorkloadIndex::WorkloadIndex(CgroupMounts mounts, Options options)
    : mounts_(std::move(mounts)),
      options_(std::move(options)),
      current_(std::make_shared<const WorkloadSnapshot>()) {
  if (options_.background) thread_ = std::thread([this] { Loop(); });
}

WorkloadIndex::~WorkloadIndex() {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<const WorkloadSnapshot> WorkloadIndex::Current() const {
  std::lock_guard<std::mutex> lock(current_mu_);
  return current_;
}

std::uint64_t WorkloadIndex::builds() const { return Current()->generation; }

void WorkloadIndex::ReportMissingPath(std::uint64_t id, bool v1_cpu) {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    if (missing_paths_.size() < 4096) missing_paths_.emplace_back(id, v1_cpu);
    wanted_ = true;
  }
  wake_.notify_one();
}

void WorkloadIndex::ReportUnnamed(const std::string& key) {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    if (unnamed_asked_.size() < 4096) unnamed_asked_.push_back(key);
    wanted_ = true;
  }
  wake_.notify_one();
}

std::shared_ptr<const WorkloadSnapshot> WorkloadIndex::WaitNewerThan(
    std::uint64_t generation, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(current_mu_);
  published_.wait_for(lock, timeout, [&] { return current_->generation > generation; });
  return current_;
}

std::shared_ptr<const WorkloadSnapshot> WorkloadIndex::RefreshNow() {
  std::lock_guard<std::mutex> lock(build_mu_);
  if (builds_ > 0 && std::chrono::steady_clock::now() - last_build_ < options_.min_rebuild) {
    return Current();
  }
  return Build();
}

// Called with build_mu_ held.
std::shared_ptr<const WorkloadSnapshot> WorkloadIndex::Build() {
  // What readers reported missing before this walk: still absent after it, it is gone.
  std::vector<std::pair<std::uint64_t, bool>> asked_paths;
  std::vector<std::string> asked_names;
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    asked_paths.swap(missing_paths_);
    asked_names.swap(unnamed_asked_);
  }
  const auto previous = Current();
  auto snap = std::make_shared<WorkloadSnapshot>();
  if (!mounts_.v2_root.empty()) snap->v2_paths = IndexHierarchy(mounts_.v2_root);
  if (const auto cpu = mounts_.v1_roots.find("cpu"); cpu != mounts_.v1_roots.end()) {
    snap->v1_cpu_paths = IndexHierarchy(cpu->second);
  }
  if (options_.cri) {
    const auto now = std::chrono::steady_clock::now();
    // No runtime yet: try again at most once a minute (a node without one stays quiet).
    if (!cri_ && (last_cri_attempt_ == std::chrono::steady_clock::time_point{} ||
                  now - last_cri_attempt_ > std::chrono::minutes(1))) {
      last_cri_attempt_ = now;
      auto client = CriClient::Connect(options_.cri_endpoint, std::chrono::milliseconds(1000));
      if (client) {
        cri_ = std::move(*client);
        spdlog::info("pod names from the container runtime at {}", cri_->endpoint());
      } else if (!cri_said_) {  // once: a node without a runtime socket stays quiet after
        cri_said_ = true;
        spdlog::info("pods are named by uid only: {}", client.error().message);
      } else {
        spdlog::debug("still no container runtime: {}", client.error().message);
      }
    }
    if (cri_) {
      auto listed = cri_->Snapshot();
      if (listed) {
        snap->cri_endpoint = listed->endpoint;
        for (const auto& p : listed->pods) {
          // The sandbox's own (pause) container has the sandbox's id; kubelet calls it "POD".
          snap->containers[p.id] = "POD";
          const std::string uid = CanonicalPodUid(p.uid);
          if (uid.empty()) continue;
          auto& names = snap->pods[uid];
          // A re-created sandbox keeps the pod's names; prefer the ready one's handler.
          if (names.name.empty() || p.ready) {
            names = PodNames{p.namespace_name, p.name, p.runtime_handler};
          }
        }
        for (const auto& c : listed->containers) snap->containers[c.id] = c.name;
      } else {
        spdlog::warn("container runtime: {} (pod names kept from the last answer)",
                     listed.error().message);
        snap->pods = previous->pods;
        snap->containers = previous->containers;
        snap->cri_endpoint = previous->cri_endpoint;
      }
    }
  }
  // Negative answers (bounded: a set that grows past 65536 starts again).
  if (previous->gone_v2.size() + previous->gone_v1_cpu.size() < 65536) {
    snap->gone_v2 = previous->gone_v2;
    snap->gone_v1_cpu = previous->gone_v1_cpu;
  }
  for (const auto& [id, v1] : asked_paths) {
    if (snap->PathOf(id, v1) == nullptr) (v1 ? snap->gone_v1_cpu : snap->gone_v2).insert(id);
  }
  // The periodic build (nothing asked) forgets the unnamed, so a name that comes later is found.
  if (!asked_names.empty() && previous->unnamed.size() < 65536) snap->unnamed = previous->unnamed;
  for (const auto& key : asked_names) {
    if (snap->Pod(key) == nullptr && snap->ContainerName(key) == nullptr) snap->unnamed.insert(key);
  }
  last_build_ = std::chrono::steady_clock::now();
  snap->generation = ++builds_;
  std::shared_ptr<const WorkloadSnapshot> out = std::move(snap);
  {
    std::lock_guard<std::mutex> lock(current_mu_);
    current_ = out;
  }
  published_.notify_all();
  return out;
}

void WorkloadIndex::Loop() {
  {
    std::lock_guard<std::mutex> lock(build_mu_);
    Build();
  }
  std::unique_lock<std::mutex> lock(wake_mu_);
  while (!stop_) {
    wake_.wait_for(lock, options_.refresh, [this] { return stop_ || wanted_; });
    if (stop_) break;
    const bool asked = wanted_;
    wanted_ = false;
    lock.unlock();
    std::chrono::steady_clock::duration wait_more{0};
    {
      std::lock_guard<std::mutex> build(build_mu_);
      const auto since = std::chrono::steady_clock::now() - last_build_;
      // The period rebuilds regardless; a miss waits out min_rebuild since the last build.
      if (!asked || since >= options_.min_rebuild) {
        Build();
      } else {
        wait_more = options_.min_rebuild - since;
      }
    }
    lock.lock();
    if (wait_more.count() > 0 && !stop_) {
      wake_.wait_for(lock, wait_more, [this] { return stop_; });
      wanted_ = true;
    }
  }
}

}  // namespace isoscope::identity
