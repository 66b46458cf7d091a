// The live event source: BPF ring buffer (consumed on a timer; BPF submits
// with BPF_RB_NO_WAKEUP so the consumer causes no wake-up storm) plus a
// snapshot of the tasks map at the end of every interval.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <unordered_set>

#include "agent/loader.hpp"
#include "collectors/source/event_source.hpp"

struct ring_buffer;

namespace isoscope {

class LiveSource : public source::EventSource {
 public:
  struct Options {
    std::chrono::milliseconds interval{1000};
    std::chrono::milliseconds consume_period{100};
    std::chrono::milliseconds duration{0};  // 0: until Stop()
  };
  static Result<std::unique_ptr<LiveSource>> Create(std::unique_ptr<Probes> probes,
                                                    Options options);
  ~LiveSource() override;

  Result<bool> NextInterval(source::RecordSink& sink) override;
  source::SourceStats stats() const override;
  std::string Describe() const override { return "live BPF"; }
  // Safe from a signal handler: ends the current interval early and the source.
  static void RequestStop();
  const Probes& probes() const { return *probes_; }

 private:
  LiveSource() = default;
  static int OnRingRecord(void* ctx, void* data, std::size_t len);
  // Consumes the ring buffer into `sink`, then reports the watermark.
  int Drain(source::RecordSink& sink);
  void Snapshot(source::RecordSink& sink);
  // ISO_REC_KVM per (vCPU thread, exit reason); keys of threads not in `alive` are deleted.
  void SnapshotExits(source::RecordSink& sink, std::uint64_t now,
                     const std::unordered_set<std::uint32_t>& alive);
  // ISO_REC_NODE per online CPU: idle steal (BPF) and /proc/stat steal.
  void SnapshotNode(source::RecordSink& sink, std::uint64_t now);

  std::unique_ptr<Probes> probes_;
  Options options_;
  ring_buffer* ring_ = nullptr;
  source::RecordSink* current_sink_ = nullptr;
  source::SourceStats stats_;
  std::chrono::steady_clock::time_point started_;
  bool baseline_sent_ = false;
  static std::atomic<bool> stop_;
};

}  // namespace isoscope
