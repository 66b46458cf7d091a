// Glue between the network evidence (collectors/network) and its two users: the span join
// (a correlator::NetLookup over a NetEvidence store) and `isoscope trace`'s per-interval
// network section and request rows (docs/network.md, docs/otlp-correlation.md).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "collectors/network/net_evidence.hpp"
#include "collectors/network/net_summary.hpp"
#include "correlator/aggregate.hpp"
#include "correlator/span_enricher.hpp"
#include "correlator/span_join.hpp"

namespace isoscope::correlator {

// The network intervals of a bound socket's flow, from `evidence`; receive-queue waits only
// when they are the bound socket's own (docs/network.md, "Joining a request").
correlator::NetLookup MakeNetLookup(const network::NetEvidence& evidence);

// The value of the kernel drop reason `name` ("tcp_old_data") in `names` (KernelDropReasonNames),
// 0 when the kernel does not have it.
std::uint16_t DropReasonValue(const std::vector<std::string>& names, std::string_view name);

// Lower-case hex of an id.
std::string HexId(std::span<const std::uint8_t> id);

// The target's network section, interval by interval. As a record sink it keeps the interval's
// network records (bounded) and learns target flows from records of the target's own threads
// (inbound/outbound traceparent, receive-queue reads); Close() adds the flows read from /proc
// for the target's processes, sums the interval and starts the next one.
class TargetNetwork : public source::RecordSink {
 public:
  explicit TargetNetwork(const correlator::TargetFilter& filter) : filter_(filter) {}
  void OnRecord(const iso_rec_hdr& hdr, std::span<const std::byte> bytes) override;
  // The kernel's value of the tcp_old_data drop reason (spurious retransmissions; 0: unknown).
  void SetOldDataReason(std::uint16_t reason) { summary_.SetOldDataReason(reason); }
  // `pids`: the target's live processes (their TCP sockets are read from /proc); may be empty
  // (replay). `drop_names`: kernel drop reason names by value, may be empty.
  correlator::NetworkSection Close(std::uint64_t start_ns, std::uint64_t end_ns,
                                   const std::vector<int>& pids,
                                   const std::vector<std::string>& drop_names);
  std::uint64_t overflow() const { return overflow_; }

 private:
  static constexpr std::size_t kMaxPending = 1u << 16;
  const correlator::TargetFilter& filter_;
  std::vector<iso_rec_net> pending_;
  std::vector<network::FlowKey> learned_;
  network::NetworkSummary summary_;
  std::uint64_t overflow_ = 0;  // records over kMaxPending in one interval (counted, not summed)
};

// Network records for node-wide metrics (agent): each record classified once (slice, retransmit
// attribution) and handed on with the workload that owns its flow. A flow's owner is learned from
// records of processes (traceparent reads/writes, receive-queue reads); packet records of a flow
// seen before its owner carry an unknown (zero) workload. Owners are kept for kMaxFlows flows.
class NetworkObserver : public source::RecordSink {
 public:
  using Callback = std::function<void(const network::NetInterval&, correlator::WorkloadKey)>;
  explicit NetworkObserver(Callback callback) : callback_(std::move(callback)) {}
  void OnRecord(const iso_rec_hdr& hdr, std::span<const std::byte> bytes) override;

 private:
  static constexpr std::size_t kMaxFlows = 1u << 16;
  void Learn(const network::FlowKey& flow, const iso_rec_hdr& hdr);
  Callback callback_;
  network::RetransAttributor attributor_;
  std::unordered_map<network::FlowKey, correlator::WorkloadKey, network::FlowKeyHash> owners_;
};

// Requests joined while tracing: SpanOutcomes arrive on gRPC threads; the trace loop takes those
// of its target once per interval. Bounded: the oldest are dropped first, counted.
class RequestLog {
 public:
  void Add(const SpanOutcome& outcome);
  std::vector<correlator::RequestReport> Take(const correlator::TargetFilter& filter);
  std::uint64_t dropped() const;

 private:
  static constexpr std::size_t kMax = 4096;
  mutable std::mutex mu_;
  std::deque<SpanOutcome> pending_;
  std::uint64_t dropped_ = 0;
};

}  // namespace isoscope::correlator
