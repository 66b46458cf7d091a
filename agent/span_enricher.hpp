// The correlation step of the agent's OTLP path: for every SERVER or CONSUMER
// span, joins the kernel evidence of the thread that served it
// (correlator::EvidenceStore) and writes isoscope's attributes into the span
// (docs/otlp-correlation.md). Other spans pass through untouched.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

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

void EnrichSpans(otlp::TraceRequest& request, const correlator::EvidenceStore& store,
                 EnrichStats& stats);

}  // namespace isoscope
