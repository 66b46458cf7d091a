// Container-layer collector: turns cumulative per-thread totals (snapshots of
// the BPF tasks map and exit records) into per-interval, per-thread deltas.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "collectors/source/event_source.hpp"

namespace isoscope::container {

struct ThreadDelta {
  std::uint32_t tid = 0;
  std::uint32_t tgid = 0;
  std::uint64_t cgroup_v2_id = 0;
  std::uint64_t cgroup_v1_cpu_id = 0;
  std::string comm;
  bool exited = false;
  bool vcpu = false;  // the thread ran KVM_RUN (ISO_TF_VCPU): a VMM's vCPU thread
  std::array<std::uint64_t, ISO_THREAD_CAUSES> ns{};  // per thread-state cause
  std::uint64_t halted_ns = 0;  // vCPU: of ns[app.blocked_other], asleep in an exit (guest HLT)

  std::uint64_t total_ns() const;
};

// A vCPU thread's exits of one reason in one interval (from ISO_REC_KVM).
struct VmExitDelta {
  std::uint32_t tid = 0;
  std::uint32_t tgid = 0;
  std::uint64_t cgroup_v2_id = 0;
  std::uint64_t cgroup_v1_cpu_id = 0;
  std::uint32_t isa = 0;  // ISO_KVM_ISA_*
  std::uint32_t reason = 0;
  std::uint64_t count = 0;
  std::uint64_t ns = 0;
};

// Node-wide steal in one interval (from ISO_REC_NODE), summed over CPUs.
struct NodeSteal {
  bool measured = false;  // the source had node records this interval
  std::uint64_t idle_ns = 0;    // while CPUs were idle (BPF)
  std::uint64_t kernel_ns = 0;  // the kernel's /proc/stat account
  std::map<std::uint32_t, std::uint64_t> kernel_ns_per_cpu;
};

struct IntervalSample {
  std::uint64_t start_ns = 0;  // previous snapshot (CLOCK_BOOTTIME)
  std::uint64_t end_ns = 0;    // this snapshot
  std::vector<ThreadDelta> threads;
  std::vector<iso_rec_delay> delays;  // streamed delay intervals that ended in the window
  std::vector<VmExitDelta> vm_exits;
  NodeSteal node_steal;
};

class ThreadTable : public source::RecordSink {
 public:
  using IntervalCallback = std::function<void(const IntervalSample&)>;
  explicit ThreadTable(IntervalCallback on_interval) : on_interval_(std::move(on_interval)) {}

  void OnRecord(const iso_rec_hdr& hdr, std::span<const std::byte> bytes) override;
  std::size_t tracked_threads() const { return last_.size(); }

 private:
  struct Seen {
    std::array<std::uint64_t, ISO_THREAD_CAUSES> effective{};  // per cause, as last seen
    std::uint64_t debt = 0;  // ns reported before that a later snapshot took back (Account)
    std::uint64_t halted = 0;
    std::uint64_t last_snapshot_ns = 0;
  };
  // Cumulative time per cause as of `at`, the open segment included.
  static std::array<std::uint64_t, ISO_THREAD_CAUSES> Effective(const iso_thread_totals& t,
                                                                std::uint64_t at);
  void Account(const iso_rec_hdr& hdr, const iso_thread_totals& t, bool exited);
  void AccountExits(const iso_rec_kvm& rec);
  void AccountNode(const iso_rec_node& rec);

  // Cumulative counters seen last, per key, with the snapshot that carried them (keys not in
  // the latest snapshot are forgotten, as threads are).
  struct SeenCounter {
    std::uint64_t a = 0;
    std::uint64_t b = 0;
    std::uint64_t last_snapshot_ns = 0;
  };

  IntervalCallback on_interval_;
  std::unordered_map<std::uint32_t, Seen> last_;
  std::unordered_map<std::uint64_t, SeenCounter> exits_;  // tid << 32 | isa << 24 | reason
  std::unordered_map<std::uint32_t, SeenCounter> cpus_;   // per CPU: idle, kernel steal
  IntervalSample pending_;
  bool started_ = false;
  std::uint64_t last_snapshot_ns_ = 0;
};

}  // namespace isoscope::container
