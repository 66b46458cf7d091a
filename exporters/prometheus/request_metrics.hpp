// Per-request (span) metrics of the agent's OTLP path (docs/otlp-correlation.md, "Span metrics"):
//
//   isoscope_request_delay_seconds{cause,layer,pod_uid,container_id,cgroup}   histogram: per span,
//       the seconds of each cause with time in its breakdown (app causes included)
//   isoscope_request_duration_seconds{pod_uid,container_id,cgroup}            histogram
//   isoscope_span_verdicts_total{layer,cause,binding,pod_uid,container_id,cgroup}
//       layer/cause "none" when no isolation cause dominated
//   isoscope_spans_enriched_total{binding}        spans joined, by binding (thread, process,
//                                                 container, pod, peer, none)
//   isoscope_client_spans_enriched_total          CLIENT/PRODUCER spans bound to their sender
//   isoscope_span_joins_incomplete_total          requests joined without their full evidence
//   isoscope_request_workloads_overflow_total     spans folded into the cgroup="other" series
//
// Both histograms have the same buckets, 100 us to 10 s. The last two counters follow the
// enricher's cumulative EnrichStats (SetEnrichStats). Cardinality is bounded as in
// PrometheusExporter: after max_workloads distinct workloads (pod_uid, container_id, cgroup),
// further ones are folded into {cgroup="other",pod_uid="",container_id=""}; the other labels take
// values from fixed sets (shared/TAXONOMY.md causes, three bindings).
//
// Thread-safe: OnSpan runs on the OTLP receiver's gRPC threads, concurrently with scrapes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "correlator/breakdown.hpp"
#include "correlator/span_enricher.hpp"
#include "exporters/prometheus/workload_labels.hpp"

namespace isoscope::exporters {

class RequestMetrics {
 public:
  // Registers the families on `registry` (once per registry: the names are fixed).
  RequestMetrics(const std::shared_ptr<prometheus::Registry>& registry, std::size_t max_workloads);
  RequestMetrics(const RequestMetrics&) = delete;
  RequestMetrics& operator=(const RequestMetrics&) = delete;

  // One SERVER/CONSUMER span as the enricher concluded; `workload` is the identity of the
  // bound thread's cgroup (empty when unbound).
  void OnSpan(const correlator::SpanOutcome& span, const correlator::TargetInfo& workload);
  // The enricher's cumulative counters; the exported counters advance by the growth since the
  // last call.
  void SetEnrichStats(const correlator::EnrichStats& stats);

  // Upper bounds of the buckets of both histograms (seconds).
  static const prometheus::Histogram::BucketBoundaries& Buckets();

 private:
  // Requires mu_.
  void Advance(prometheus::Counter& counter, std::uint64_t& previous, std::uint64_t value);

  WorkloadFolder workloads_;  // guarded by mu_
  prometheus::Family<prometheus::Histogram>& delay_seconds_;
  prometheus::Family<prometheus::Histogram>& duration_seconds_;
  prometheus::Family<prometheus::Counter>& verdicts_;
  prometheus::Family<prometheus::Counter>& enriched_;
  prometheus::Counter& client_enriched_;
  prometheus::Counter& joins_incomplete_;
  prometheus::Counter& overflow_;

  std::mutex mu_;
  // Every binding a SERVER/CONSUMER span can get, in EnrichStats order.
  static constexpr correlator::Binding kBindings[] = {
      correlator::Binding::kThread, correlator::Binding::kProcess, correlator::Binding::kContainer,
      correlator::Binding::kPod,    correlator::Binding::kPeer,    correlator::Binding::kNone};
  struct Previous {
    std::uint64_t bindings[std::size(kBindings)] = {};
    std::uint64_t client = 0, incomplete = 0;
  } previous_;  // last EnrichStats seen, guarded by mu_
};

}  // namespace isoscope::exporters
