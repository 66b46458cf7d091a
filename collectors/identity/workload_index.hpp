// What the agent knows of the node's workloads at one moment, for naming the cgroup ids that
// records carry: cgroup id -> path in the v2 and the v1 cpu hierarchy, and the container
// runtime's names for pods and containers (CRI: namespace, pod name, container name, RuntimeClass
// handler).
//
// A WorkloadIndex hands out immutable snapshots. Readers (the span path on the OTLP receivers'
// threads, the drain thread) copy a pointer under a lock held for nothing else: they never wait
// for a cgroup walk or a runtime call. Snapshots are rebuilt
//   - by a background thread, every `refresh` and soon after a reader reports a miss
//     (ReportMissingPath / ReportUnnamed, at most once per `min_rebuild`); a reader may wait a
//     bounded time for that rebuild (WaitNewerThan) on a condition of its own, never on a lock the
//     builder holds while it walks;
//   - or in the caller's thread (RefreshNow, rate-limited the same way), for the drain thread,
//     which may wait: it is the thread that needs a new cgroup named in this interval's report.
// Builders are serialised by their own lock, which readers never take.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "collectors/identity/cgroup_identity.hpp"
#include "collectors/identity/cri.hpp"

namespace isoscope::identity {

struct PodNames {
  std::string namespace_name;
  std::string name;
  std::string runtime_handler;
};

struct WorkloadSnapshot {
  std::unordered_map<std::uint64_t, std::string> v2_paths;      // id -> path below the v2 root
  std::unordered_map<std::uint64_t, std::string> v1_cpu_paths;  // id -> path below the v1 cpu root
  std::unordered_map<std::string, PodNames> pods;               // canonical pod uid -> names
  std::unordered_map<std::string, std::string> containers;      // container id -> container name
  std::string cri_endpoint;  // the runtime that named them; "" when none answered
  std::uint64_t generation = 0;
  // Negative answers, so a miss asks for one rebuild, not one per lookup: cgroup ids reported
  // missing and still absent after a later walk (gone: kernfs ids are never reused), and pod uids /
  // container ids the runtime did not name in a build after they were asked for (cleared by the
  // periodic rebuild, so a name that comes later is found).
  std::unordered_set<std::uint64_t> gone_v2;
  std::unordered_set<std::uint64_t> gone_v1_cpu;
  std::unordered_set<std::string> unnamed;

  bool Gone(std::uint64_t id, bool v1_cpu) const {
    return (v1_cpu ? gone_v1_cpu : gone_v2).count(id) != 0;
  }

  // The path of a cgroup id, nullptr when unknown.
  const std::string* PathOf(std::uint64_t id, bool v1_cpu) const;
  const PodNames* Pod(const std::string& canonical_uid) const;
  const std::string* ContainerName(const std::string& container_id) const;
};

class WorkloadIndex {
 public:
  struct Options {
    std::chrono::milliseconds min_rebuild{250};   // between rebuilds asked for by misses
    std::chrono::milliseconds refresh{30000};     // background rebuild period
    bool background = true;                       // run the background thread
    bool cri = true;                              // ask the container runtime for names
    std::string cri_endpoint;                     // "" = probe the usual sockets
  };

  WorkloadIndex(CgroupMounts mounts, Options options);
  ~WorkloadIndex();
  WorkloadIndex(const WorkloadIndex&) = delete;
  WorkloadIndex& operator=(const WorkloadIndex&) = delete;

  // The current snapshot (never null; empty before the first build). Never blocks on a build.
  std::shared_ptr<const WorkloadSnapshot> Current() const;
  // A reader missed an id or a name: the background thread rebuilds soon (rate-limited), and
  // that build records what it still does not know (WorkloadSnapshot::Gone, unnamed).
  void ReportMissingPath(std::uint64_t id, bool v1_cpu);
  void ReportUnnamed(const std::string& pod_uid_or_container_id);
  // Waits until a snapshot newer than `generation` is published, at most `timeout`; returns the
  // current snapshot either way.
  std::shared_ptr<const WorkloadSnapshot> WaitNewerThan(std::uint64_t generation,
                                                        std::chrono::milliseconds timeout) const;
  // Rebuilds in this thread unless the last build is younger than min_rebuild (then returns the
  // current snapshot), and returns the newest snapshot.
  std::shared_ptr<const WorkloadSnapshot> RefreshNow();
  const CgroupMounts& mounts() const { return mounts_; }
  std::uint64_t builds() const;

 private:
  std::shared_ptr<const WorkloadSnapshot> Build();
  void Loop();

  const CgroupMounts mounts_;
  const Options options_;

  mutable std::mutex current_mu_;  // guards current_ only (a pointer copy)
  mutable std::condition_variable published_;
  std::shared_ptr<const WorkloadSnapshot> current_;

  std::mutex build_mu_;  // serialises builders; readers never take it
  std::unique_ptr<CriClient> cri_;
  std::chrono::steady_clock::time_point last_build_{};
  std::chrono::steady_clock::time_point last_cri_attempt_{};
  bool cri_said_ = false;  // the missing runtime was logged
  std::uint64_t builds_ = 0;

  std::mutex wake_mu_;
  std::condition_variable wake_;
  bool wanted_ = false;
  std::vector<std::pair<std::uint64_t, bool>> missing_paths_;  // reported since the last build
  std::vector<std::string> unnamed_asked_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace isoscope::identity
