// Container-layer collector: turns cumulative per-thread totals (snapshots of
// the BPF tasks map and exit records) into per-interval, per-thread deltas.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
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
  std::array<std::uint64_t, ISO_THREAD_CAUSES> ns{};  // per thread-state cause

  std::uint64_t total_ns() const;
};

struct IntervalSample {
  std::uint64_t start_ns = 0;  // previous snapshot (CLOCK_BOOTTIME)
  std::uint64_t end_ns = 0;    // this snapshot
  std::vector<ThreadDelta> threads;
  std::vector<iso_rec_delay> delays;  // streamed delay intervals that ended in the window
};

class ThreadTable : public source::RecordSink {
 public:
  using IntervalCallback = std::function<void(const IntervalSample&)>;
  explicit ThreadTable(IntervalCallback on_interval) : on_interval_(std::move(on_interval)) {}

  void OnRecord(const iso_rec_hdr& hdr, std::span<const std::byte> bytes) override;
  std::size_t tracked_threads() const { return last_.size(); }

 private:
  struct Seen {
    std::array<std::uint64_t, ISO_THREAD_CAUSES> effective{};  // high-water mark per cause
    std::uint64_t last_snapshot_ns = 0;
  };
  // Cumulative time per cause as of `at`, the open segment included.
  static std::array<std::uint64_t, ISO_THREAD_CAUSES> Effective(const iso_thread_totals& t,
                                                                std::uint64_t at);
  void Account(const iso_rec_hdr& hdr, const iso_thread_totals& t, bool exited);

  IntervalCallback on_interval_;
  std::unordered_map<std::uint32_t, Seen> last_;
  IntervalSample pending_;
  bool started_ = false;
  std::uint64_t last_snapshot_ns_ = 0;
};

}  // namespace isoscope::container
