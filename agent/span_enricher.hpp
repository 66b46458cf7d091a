// The correlation step of the agent's OTLP path: for every SERVER or CONSUMER
// span, joins the kernel evidence of the thread that served it
// (correlator::EvidenceStore) and writes isoscope's attributes into the span
// (docs/otlp-correlation.md). Other spans pass through untouched.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>

#include "correlator/span_join.hpp"
#include "exporters/otlp/otlp_codec.hpp"

namespace isoscope {

struct EnrichStats {
  std::atomic<std::uint64_t> spans_seen{0};
  std::atomic<std::uint64_t> spans_bound_thread{0};
  std::atomic<std::uint64_t> spans_bound_process{0};
  std::atomic<std::uint64_t> spans_unbound{0};
  // Requests joined after kEvidenceWait without the evidence reaching their
  // spans' end (the agent was not draining: stopped, or overloaded).
  std::atomic<std::uint64_t> joins_without_full_evidence{0};
};

// Upper bound on how long a request waits for its evidence (drains run every
// 100 ms).
inline constexpr std::chrono::milliseconds kEvidenceWait{500};

// What the enricher concluded for one SERVER/CONSUMER span: for metrics and
// `isoscope trace` rows. `result.cgroup_*` name the workload when bound.
struct SpanOutcome {
  correlator::TraceId trace_id{};
  correlator::SpanId span_id{};
  std::uint64_t start_boot_ns = 0;
  std::uint64_t end_boot_ns = 0;
  double duration_s = 0;
  std::uint32_t resource_pid = 0;  // process.pid of the span's resource, 0 if absent
  correlator::SpanResult result;
};
using SpanObserver = std::function<void(const SpanOutcome&)>;

// Joins and annotates every SERVER/CONSUMER span in `request`; `observer`, when
// set, is called once per such span after its attributes are written.
void EnrichSpans(otlp::TraceRequest& request, const correlator::EvidenceStore& store,
                 EnrichStats& stats, const SpanObserver& observer = {});

}  // namespace isoscope
