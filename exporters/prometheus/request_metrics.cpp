#include "exporters/prometheus/request_metrics.hpp"

#include <cmath>
#include <string_view>
#include <utility>

namespace isoscope::exporters {
namespace {

constexpr std::string_view kNone = "none";

prometheus::Family<prometheus::Counter>& CounterFamily(prometheus::Registry& registry,
                                                       const std::string& name,
                                                       const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry);
}

prometheus::Family<prometheus::Histogram>& HistogramFamily(prometheus::Registry& registry,
                                                           const std::string& name,
                                                           const std::string& help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(registry);
}

bool Usable(double seconds) { return std::isfinite(seconds) && seconds > 0; }

}  // namespace

const prometheus::Histogram::BucketBoundaries& RequestMetrics::Buckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
  return kBuckets;
}

RequestMetrics::RequestMetrics(const std::shared_ptr<prometheus::Registry>& registry,
                               std::size_t max_workloads)
    : workloads_(max_workloads),
      delay_seconds_(HistogramFamily(
          *registry, "isoscope_request_delay_seconds",
          "Per request (SERVER/CONSUMER span), the seconds of each cause (shared/TAXONOMY.md) in "
          "its breakdown, by cause and workload.")),
      duration_seconds_(HistogramFamily(*registry, "isoscope_request_duration_seconds",
                                        "Duration of requests (SERVER/CONSUMER spans) joined to "
                                        "kernel evidence, by workload.")),
      verdicts_(CounterFamily(*registry, "isoscope_span_verdicts_total",
                              "Per-request verdicts by blamed layer and cause (\"none\" when no "
                              "isolation cause dominated) and by how the span was bound.")),
      enriched_(CounterFamily(*registry, "isoscope_spans_enriched_total",
                              "SERVER/CONSUMER spans joined to kernel evidence, by binding "
                              "(thread, process, container, pod, peer, none).")),
      client_enriched_(CounterFamily(*registry, "isoscope_client_spans_enriched_total",
                                     "CLIENT/PRODUCER spans joined to the thread that sent "
                                     "their request (outbound traceparent).")
                           .Add({})),
      joins_incomplete_(CounterFamily(*registry, "isoscope_span_joins_incomplete_total",
                                      "Requests joined after waiting the longest allowed without "
                                      "the evidence reaching their spans' end.")
                            .Add({})),
      overflow_(CounterFamily(*registry, "isoscope_request_workloads_overflow_total",
                              "Spans folded into the cgroup=\"other\" series of the request "
                              "metrics because the workload limit was reached.")
                    .Add({})) {
  // Present from the start, so that rates of zero are visible.
  for (auto b : kBindings) enriched_.Add({{"binding", std::string(correlator::BindingName(b))}});
}

void RequestMetrics::OnSpan(const correlator::SpanOutcome& span,
                            const correlator::TargetInfo& workload) {
  const correlator::SpanResult& r = span.result;
  std::lock_guard<std::mutex> lock(mu_);
  bool folded = false;
  const prometheus::Labels labels = workloads_.Labels(workload, &folded);
  if (folded) overflow_.Increment();

  for (abi::Cause c = 0; c < ISO_CAUSE_MAX; ++c) {
    const std::string_view name = abi::CauseName(c);
    if (name.empty() || !Usable(r.breakdown.seconds[c])) continue;
    prometheus::Labels l = labels;
    l.emplace("cause", name);
    l.emplace("layer", abi::LayerName(abi::CauseLayer(c)));
    delay_seconds_.Add(l, Buckets()).Observe(r.breakdown.seconds[c]);
  }
  if (Usable(span.duration_s)) duration_seconds_.Add(labels, Buckets()).Observe(span.duration_s);

  prometheus::Labels v = labels;
  v.emplace("binding", correlator::BindingName(r.binding));
  const auto& cause = r.verdict.cause;
  if (cause && !abi::CauseName(*cause).empty()) {
    v.emplace("layer", abi::LayerName(abi::CauseLayer(*cause)));
    v.emplace("cause", abi::CauseName(*cause));
  } else {
    v.emplace("layer", kNone);
    v.emplace("cause", kNone);
  }
  verdicts_.Add(v).Increment();
}

void RequestMetrics::Advance(prometheus::Counter& counter, std::uint64_t& previous,
                             std::uint64_t value) {
  // EnrichStats only grow; a lower value means a new source, whose whole value is new.
  const std::uint64_t delta = value >= previous ? value - previous : value;
  previous = value;
  if (delta > 0) counter.Increment(static_cast<double>(delta));
}

void RequestMetrics::SetEnrichStats(const correlator::EnrichStats& stats) {
  std::lock_guard<std::mutex> lock(mu_);
  auto binding = [&](correlator::Binding b) -> prometheus::Counter& {
    return enriched_.Add({{"binding", std::string(correlator::BindingName(b))}});
  };
  const std::atomic<std::uint64_t>* counts[] = {
      &stats.spans_bound_thread,    &stats.spans_bound_process, &stats.spans_bound_container,
      &stats.spans_bound_pod,       &stats.spans_bound_peer,    &stats.spans_unbound};
  static_assert(std::size(counts) == std::size(kBindings));
  for (std::size_t i = 0; i < std::size(kBindings); ++i) {
    Advance(binding(kBindings[i]), previous_.bindings[i], counts[i]->load(std::memory_order_relaxed));
  }
  Advance(client_enriched_, previous_.client, stats.client_spans_bound.load(std::memory_order_relaxed));
  Advance(joins_incomplete_, previous_.incomplete,
          stats.joins_without_full_evidence.load(std::memory_order_relaxed));
}

}  // namespace isoscope::exporters
