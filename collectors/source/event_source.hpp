// One event-source interface for live BPF input, replay of a recording and
// synthetic records in tests. Everything downstream of a source (record
// writer, collectors, correlator, exporters) is the same for all three.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "isoscope/abi.hpp"

namespace isoscope::source {

// Receives validated records. `bytes` (header included) is valid only
// during the call.
class RecordSink {
 public:
  virtual ~RecordSink() = default;
  virtual void OnRecord(const iso_rec_hdr& hdr, std::span<const std::byte> bytes) = 0;
  // Every record the kernel produced before boot time `ns` has been delivered
  // (live source: called after each ring-buffer drain). Lets consumers that
  // answer queries from other threads know how far their evidence reaches.
  virtual void OnWatermark(std::uint64_t /*ns*/) {}
};

// Forwards each record to several sinks in order (e.g. a recorder, then the
// collector).
class TeeSink : public RecordSink {
 public:
  explicit TeeSink(std::vector<RecordSink*> sinks) : sinks_(std::move(sinks)) {}
  void OnRecord(const iso_rec_hdr& hdr, std::span<const std::byte> bytes) override {
    for (RecordSink* s : sinks_) s->OnRecord(hdr, bytes);
  }
  void OnWatermark(std::uint64_t ns) override {
    for (RecordSink* s : sinks_) s->OnWatermark(ns);
  }

 private:
  std::vector<RecordSink*> sinks_;
};

// Counters every source keeps; "lost" and "invalid" are drops, exported as
// isoscope_records_lost_total{reason}.
struct SourceStats {
  std::array<std::uint64_t, ISO_REC_KIND_MAX> received{};
  std::uint64_t lost_ringbuf = 0;     // BPF could not reserve ring buffer space
  std::uint64_t lost_tasks_full = 0;  // threads not tracked: tasks map full
  std::uint64_t invalid = 0;          // records that failed validation
};

std::string_view RecordKindName(std::uint16_t kind);

class EventSource {
 public:
  virtual ~EventSource() = default;
  // Delivers the records of one interval, ending with its ISO_REC_SNAPSHOT.
  // Returns false once the input has ended (end of file, duration elapsed,
  // stop requested); records delivered before that still count.
  virtual Result<bool> NextInterval(RecordSink& sink) = 0;
  virtual SourceStats stats() const = 0;
  virtual std::string Describe() const = 0;
};

// Validates one raw record, counts it in `stats`, and hands it to `sink`.
// Returns the record's kind, or ISO_REC_INVALID when it was dropped.
std::uint16_t Deliver(const void* data, std::size_t len, SourceStats& stats, RecordSink& sink);

// ---- replay --------------------------------------------------------------
class ReplaySource : public EventSource {
 public:
  static Result<std::unique_ptr<ReplaySource>> Open(const std::string& path);
  Result<bool> NextInterval(RecordSink& sink) override;
  SourceStats stats() const override { return stats_; }
  std::string Describe() const override;
  const iso_file_hdr& header() const { return header_; }

 private:
  std::string path_;
  std::vector<std::byte> data_;
  std::size_t offset_ = 0;
  iso_file_hdr header_{};
  SourceStats stats_;
};

// Writes what a source delivers into a recording (format: docs/abi.md).
class RecordWriter : public RecordSink {
 public:
  static Result<std::unique_ptr<RecordWriter>> Create(const std::string& path);
  ~RecordWriter() override;
  void OnRecord(const iso_rec_hdr& hdr, std::span<const std::byte> bytes) override;
  Status Close();
  std::uint64_t records() const { return records_; }

 private:
  std::FILE* file_ = nullptr;
  std::string path_;
  std::uint64_t records_ = 0;
  bool failed_ = false;
};

// ---- synthetic -------------------------------------------------------------
// Plays back records built in memory (tests/testing/event_builder.hpp).
class SyntheticSource : public EventSource {
 public:
  explicit SyntheticSource(std::vector<std::vector<std::byte>> records)
      : records_(std::move(records)) {}
  Result<bool> NextInterval(RecordSink& sink) override;
  SourceStats stats() const override { return stats_; }
  std::string Describe() const override { return "synthetic"; }

 private:
  std::vector<std::vector<std::byte>> records_;
  std::size_t next_ = 0;
  SourceStats stats_;
};

// CLOCK_BOOTTIME now, the clock of every record timestamp.
std::uint64_t BootNs();

}  // namespace isoscope::source
