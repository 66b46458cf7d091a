// Span metrics: RequestMetrics (per-request histograms, verdict counters, folding, EnrichStats)
// and the OTLP bridge of a Prometheus registry (exporters/otlp/otlp_metrics_bridge).
#include "exporters/prometheus/request_metrics.hpp"

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/summary.h>

#include "correlator/span_enricher.hpp"
#include "exporters/otlp/otlp_metrics_bridge.hpp"
#include "isoscope/abi.hpp"
#include "otlp/test_collector.hpp"
#include "testing/metrics_checks.hpp"

namespace isoscope {
namespace {

using correlator::EnrichStats;
using correlator::SpanOutcome;
using exporters::RequestMetrics;
namespace pbm = opentelemetry::proto::metrics::v1;

const prometheus::MetricFamily* Family(const std::vector<prometheus::MetricFamily>& families,
                                       const std::string& name) {
  for (const auto& f : families) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

// The series of `family` whose labels include all of `want`.
std::vector<const prometheus::ClientMetric*> Series(
    const prometheus::MetricFamily* family, const std::map<std::string, std::string>& want) {
  std::vector<const prometheus::ClientMetric*> out;
  if (family == nullptr) return out;
  for (const auto& m : family->metric) {
    std::size_t matched = 0;
    for (const auto& l : m.label) {
      auto it = want.find(l.name);
      if (it != want.end() && it->second == l.value) ++matched;
    }
    if (matched == want.size()) out.push_back(&m);
  }
  return out;
}

using testing::Workload;

SpanOutcome ThrottledSpan() {
  SpanOutcome o;
  o.duration_s = 0.120;
  o.result.binding = correlator::Binding::kThread;
  o.result.breakdown.interval_s = 0.120;
  o.result.breakdown.threads = 1;
  o.result.breakdown.thread_seconds = 0.120;
  o.result.breakdown.seconds[ISO_CAUSE_CONTAINER_CPU_THROTTLE] = 0.080;
  o.result.breakdown.seconds[ISO_CAUSE_APP_ON_CPU] = 0.040;
  o.result.verdict = correlator::ComputeVerdict(o.result.breakdown);
  return o;
}

SpanOutcome HealthySpan() {
  SpanOutcome o;
  o.duration_s = 0.015;
  o.result.binding = correlator::Binding::kThread;
  o.result.breakdown.interval_s = 0.015;
  o.result.breakdown.threads = 1;
  o.result.breakdown.thread_seconds = 0.015;
  o.result.breakdown.seconds[ISO_CAUSE_APP_ON_CPU] = 0.015;
  o.result.verdict = correlator::ComputeVerdict(o.result.breakdown);
  return o;
}

TEST(RequestMetrics, DelayHistogramPerCauseWithLayer) {
  auto registry = std::make_shared<prometheus::Registry>();
  RequestMetrics m(registry, 16);
  const auto w = Workload("/kubepods/pod-a/c1", "pod-a", "c1");
  m.OnSpan(ThrottledSpan(), w);
  m.OnSpan(ThrottledSpan(), w);

  const auto families = registry->Collect();
  const auto* delay = Family(families, "isoscope_request_delay_seconds");
  ASSERT_NE(delay, nullptr);
  EXPECT_EQ(delay->type, prometheus::MetricType::Histogram);
  // Two causes with time: the throttle and app.on_cpu (app causes are included).
  EXPECT_EQ(delay->metric.size(), 2u);
  auto throttle = Series(delay, {{"cause", "container.cpu_throttle"},
                                 {"layer", "container"},
                                 {"cgroup", "/kubepods/pod-a/c1"},
                                 {"pod_uid", "pod-a"},
                                 {"container_id", "c1"}});
  ASSERT_EQ(throttle.size(), 1u);
  const auto& h = throttle[0]->histogram;
  EXPECT_EQ(h.sample_count, 2u);
  EXPECT_NEAR(h.sample_sum, 0.160, 1e-12);
  // 80 ms lands in (0.05, 0.1]: the bucket below holds nothing, that one holds both.
  const auto& bounds = RequestMetrics::Buckets();
  ASSERT_EQ(h.bucket.size(), bounds.size() + 1);
  EXPECT_EQ(h.bucket.front().upper_bound, 0.0001);
  EXPECT_EQ(bounds.back(), 10.0);
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    EXPECT_EQ(h.bucket[i].cumulative_count, bounds[i] >= 0.08 ? 2u : 0u) << bounds[i];
  }
  auto app = Series(delay, {{"cause", "app.on_cpu"}, {"layer", "app"}});
  ASSERT_EQ(app.size(), 1u);
  EXPECT_NEAR(app[0]->histogram.sample_sum, 0.080, 1e-12);

  const auto* duration = Family(families, "isoscope_request_duration_seconds");
  ASSERT_NE(duration, nullptr);
  ASSERT_EQ(duration->metric.size(), 1u);
  EXPECT_EQ(duration->metric[0].histogram.sample_count, 2u);
  EXPECT_NEAR(duration->metric[0].histogram.sample_sum, 0.240, 1e-12);
  std::vector<std::string> names;
  for (const auto& l : duration->metric[0].label) names.push_back(l.name);
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("pod_uid", "container_id", "cgroup",
                                                     "namespace", "pod", "container"));
}

TEST(RequestMetrics, VerdictCountersByLayerCauseBinding) {
  auto registry = std::make_shared<prometheus::Registry>();
  RequestMetrics m(registry, 16);
  const auto w = Workload("/a");
  m.OnSpan(ThrottledSpan(), w);
  m.OnSpan(HealthySpan(), w);
  m.OnSpan(HealthySpan(), w);
  SpanOutcome unbound;  // no evidence: binding none, verdict none, no breakdown
  m.OnSpan(unbound, Workload(""));

  const auto families = registry->Collect();
  const auto* v = Family(families, "isoscope_span_verdicts_total");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->type, prometheus::MetricType::Counter);
  auto blamed = Series(v, {{"layer", "container"},
                           {"cause", "container.cpu_throttle"},
                           {"binding", "thread"},
                           {"cgroup", "/a"}});
  ASSERT_EQ(blamed.size(), 1u);
  EXPECT_EQ(blamed[0]->counter.value, 1.0);
  auto none = Series(v, {{"layer", "none"}, {"cause", "none"}, {"binding", "thread"}});
  ASSERT_EQ(none.size(), 1u);
  EXPECT_EQ(none[0]->counter.value, 2.0);
  auto unbound_series = Series(v, {{"layer", "none"}, {"binding", "none"}, {"cgroup", ""}});
  ASSERT_EQ(unbound_series.size(), 1u);
  EXPECT_EQ(unbound_series[0]->counter.value, 1.0);
  // The unbound span had no breakdown and no duration: no histogram observation.
  const auto* delay = Family(families, "isoscope_request_delay_seconds");
  ASSERT_NE(delay, nullptr);
  EXPECT_TRUE(Series(delay, {{"cgroup", ""}}).empty());
}

TEST(RequestMetrics, IgnoresNonFiniteAndNegativeSeconds) {
  auto registry = std::make_shared<prometheus::Registry>();
  RequestMetrics m(registry, 16);
  SpanOutcome o = HealthySpan();
  o.duration_s = std::numeric_limits<double>::quiet_NaN();
  o.result.breakdown.seconds[ISO_CAUSE_CONTAINER_RUNQUEUE] = -1.0;
  o.result.breakdown.seconds[ISO_CAUSE_CONTAINER_CPU_THROTTLE] =
      std::numeric_limits<double>::infinity();
  m.OnSpan(o, Workload("/a"));
  const auto families = registry->Collect();
  ASSERT_NE(Family(families, "isoscope_request_delay_seconds"), nullptr);
  EXPECT_EQ(Family(families, "isoscope_request_delay_seconds")->metric.size(), 1u);  // on_cpu
  EXPECT_TRUE(Series(Family(families, "isoscope_request_duration_seconds"), {}).empty());
}

TEST(RequestMetrics, FoldsWorkloadsPastTheLimit) {
  auto registry = std::make_shared<prometheus::Registry>();
  RequestMetrics m(registry, 2);
  m.OnSpan(ThrottledSpan(), Workload("/w1", "p1", "c1"));
  m.OnSpan(ThrottledSpan(), Workload("/w2", "p2", "c2"));
  m.OnSpan(ThrottledSpan(), Workload("/w3", "p3", "c3"));
  m.OnSpan(ThrottledSpan(), Workload("/w4", "p4", "c4"));
  m.OnSpan(ThrottledSpan(), Workload("/w1", "p1", "c1"));  // known: not folded

  const auto families = registry->Collect();
  const auto* duration = Family(families, "isoscope_request_duration_seconds");
  ASSERT_NE(duration, nullptr);
  EXPECT_EQ(duration->metric.size(), 3u);  // w1, w2, other
  auto other = Series(duration, {{"cgroup", "other"}, {"pod_uid", ""}, {"container_id", ""}});
  ASSERT_EQ(other.size(), 1u);
  EXPECT_EQ(other[0]->histogram.sample_count, 2u);
  auto w1 = Series(duration, {{"cgroup", "/w1"}});
  ASSERT_EQ(w1.size(), 1u);
  EXPECT_EQ(w1[0]->histogram.sample_count, 2u);
  EXPECT_TRUE(Series(duration, {{"cgroup", "/w3"}}).empty());
  EXPECT_TRUE(
      Series(Family(families, "isoscope_span_verdicts_total"), {{"pod_uid", "p4"}}).empty());
  const auto* overflow = Family(families, "isoscope_request_workloads_overflow_total");
  ASSERT_NE(overflow, nullptr);
  ASSERT_EQ(overflow->metric.size(), 1u);
  EXPECT_EQ(overflow->metric[0].counter.value, 2.0);
}

TEST(RequestMetrics, EnrichStatsAdvanceByDelta) {
  auto registry = std::make_shared<prometheus::Registry>();
  RequestMetrics m(registry, 16);
  auto value = [&](const std::string& name, const std::map<std::string, std::string>& labels) {
    const auto families = registry->Collect();
    auto s = Series(Family(families, name), labels);
    return s.size() == 1 ? s[0]->counter.value : -1.0;
  };
  // Present before any span.
  EXPECT_EQ(value("isoscope_spans_enriched_total", {{"binding", "thread"}}), 0.0);
  EXPECT_EQ(value("isoscope_spans_enriched_total", {{"binding", "process"}}), 0.0);
  EXPECT_EQ(value("isoscope_spans_enriched_total", {{"binding", "none"}}), 0.0);
  EXPECT_EQ(value("isoscope_spans_enriched_total", {{"binding", "peer"}}), 0.0);
  EXPECT_EQ(value("isoscope_span_joins_incomplete_total", {}), 0.0);

  EnrichStats stats;
  stats.spans_bound_thread = 5;
  stats.spans_bound_process = 2;
  stats.spans_unbound = 1;
  stats.joins_without_full_evidence = 3;
  stats.spans_bound_container = 4;
  stats.client_spans_bound = 6;
  m.SetEnrichStats(stats);
  m.SetEnrichStats(stats);  // no growth: no change
  stats.spans_bound_thread = 9;
  m.SetEnrichStats(stats);
  EXPECT_EQ(value("isoscope_spans_enriched_total", {{"binding", "thread"}}), 9.0);
  EXPECT_EQ(value("isoscope_spans_enriched_total", {{"binding", "process"}}), 2.0);
  EXPECT_EQ(value("isoscope_spans_enriched_total", {{"binding", "none"}}), 1.0);
  EXPECT_EQ(value("isoscope_span_joins_incomplete_total", {}), 3.0);
  EXPECT_EQ(value("isoscope_spans_enriched_total", {{"binding", "container"}}), 4.0);
  EXPECT_EQ(value("isoscope_spans_enriched_total", {{"binding", "pod"}}), 0.0);
  EXPECT_EQ(value("isoscope_client_spans_enriched_total", {}), 6.0);
}

TEST(RequestMetrics, ConcurrentSpans) {
  auto registry = std::make_shared<prometheus::Registry>();
  RequestMetrics m(registry, 4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&m, t] {
      for (int i = 0; i < 500; ++i) {
        m.OnSpan(ThrottledSpan(), Workload("/w" + std::to_string((t + i) % 8)));
      }
    });
  }
  for (auto& th : threads) th.join();
  const auto families = registry->Collect();
  double spans = 0;
  for (const auto& s : Family(families, "isoscope_request_duration_seconds")->metric) {
    spans += static_cast<double>(s.histogram.sample_count);
  }
  EXPECT_EQ(spans, 2000.0);
  EXPECT_EQ(Family(families, "isoscope_request_duration_seconds")->metric.size(), 5u);
}

// ---- the OTLP bridge ----

const pbm::Metric* FindMetric(const otlp::MetricsRequest& req, const std::string& name) {
  for (const auto& rm : req.resource_metrics()) {
    for (const auto& sm : rm.scope_metrics()) {
      for (const auto& m : sm.metrics()) {
        if (m.name() == name) return &m;
      }
    }
  }
  return nullptr;
}

std::map<std::string, std::string> Attributes(
    const google::protobuf::RepeatedPtrField<opentelemetry::proto::common::v1::KeyValue>& kvs) {
  std::map<std::string, std::string> out;
  for (const auto& kv : kvs) out[kv.key()] = kv.value().string_value();
  return out;
}

TEST(OtlpMetricsBridge, ConvertsEachMetricType) {
  prometheus::Registry registry;
  auto& c =
      prometheus::BuildCounter().Name("isoscope_c_total").Help("a counter").Register(registry);
  c.Add({{"reason", "x"}}).Increment(3);
  auto& g = prometheus::BuildGauge().Name("isoscope_g").Help("a gauge").Register(registry);
  g.Add({}).Set(-2.5);
  auto& h = prometheus::BuildHistogram().Name("isoscope_h_seconds").Help("h").Register(registry);
  auto& hist = h.Add({{"cause", "container.cpu_throttle"}},
                     prometheus::Histogram::BucketBoundaries{0.1, 1.0});
  hist.Observe(0.05);
  hist.Observe(0.5);
  hist.Observe(0.7);
  hist.Observe(3.0);
  auto& s = prometheus::BuildSummary().Name("isoscope_s").Help("s").Register(registry);
  s.Add({}, prometheus::Summary::Quantiles{{0.5, 0.05}}).Observe(2.0);
  prometheus::BuildCounter()
      .Name("other_total")
      .Help("not ours")
      .Register(registry)
      .Add({})
      .Increment();

  otlp::MetricsBridgeOptions o;
  o.host_name = "node-1";
  o.start_time_unix_nano = 1000;
  const auto req = otlp::ToOtlpMetrics(registry.Collect(), o, 5000);

  ASSERT_EQ(req.resource_metrics_size(), 1);
  const auto& rm = req.resource_metrics(0);
  const auto res = Attributes(rm.resource().attributes());
  EXPECT_EQ(res.at("service.name"), "isoscope");
  EXPECT_EQ(res.at("host.name"), "node-1");
  ASSERT_EQ(rm.scope_metrics_size(), 1);
  EXPECT_EQ(rm.scope_metrics(0).scope().name(), "isoscope");
  EXPECT_EQ(rm.scope_metrics(0).metrics_size(), 4);  // other_total left out (prefix)
  EXPECT_EQ(FindMetric(req, "other_total"), nullptr);

  const auto* counter = FindMetric(req, "isoscope_c_total");
  ASSERT_NE(counter, nullptr);
  EXPECT_EQ(counter->description(), "a counter");
  ASSERT_TRUE(counter->has_sum());
  EXPECT_TRUE(counter->sum().is_monotonic());
  EXPECT_EQ(counter->sum().aggregation_temporality(), pbm::AGGREGATION_TEMPORALITY_CUMULATIVE);
  ASSERT_EQ(counter->sum().data_points_size(), 1);
  const auto& cp = counter->sum().data_points(0);
  EXPECT_EQ(cp.value_case(), pbm::NumberDataPoint::kAsDouble);
  EXPECT_EQ(cp.as_double(), 3.0);
  EXPECT_EQ(cp.start_time_unix_nano(), 1000u);
  EXPECT_EQ(cp.time_unix_nano(), 5000u);
  EXPECT_EQ(Attributes(cp.attributes()), (std::map<std::string, std::string>{{"reason", "x"}}));

  const auto* gauge = FindMetric(req, "isoscope_g");
  ASSERT_NE(gauge, nullptr);
  ASSERT_TRUE(gauge->has_gauge());
  ASSERT_EQ(gauge->gauge().data_points_size(), 1);
  EXPECT_EQ(gauge->gauge().data_points(0).as_double(), -2.5);
  EXPECT_EQ(gauge->gauge().data_points(0).time_unix_nano(), 5000u);
  EXPECT_EQ(gauge->gauge().data_points(0).attributes_size(), 0);

  const auto* histogram = FindMetric(req, "isoscope_h_seconds");
  ASSERT_NE(histogram, nullptr);
  ASSERT_TRUE(histogram->has_histogram());
  EXPECT_EQ(histogram->histogram().aggregation_temporality(),
            pbm::AGGREGATION_TEMPORALITY_CUMULATIVE);
  ASSERT_EQ(histogram->histogram().data_points_size(), 1);
  const auto& hp = histogram->histogram().data_points(0);
  EXPECT_EQ(hp.count(), 4u);
  ASSERT_TRUE(hp.has_sum());
  EXPECT_NEAR(hp.sum(), 4.25, 1e-12);
  ASSERT_EQ(hp.explicit_bounds_size(), 2);
  EXPECT_EQ(hp.explicit_bounds(0), 0.1);
  EXPECT_EQ(hp.explicit_bounds(1), 1.0);
  // Per bucket, not cumulative: (-inf, 0.1] 1, (0.1, 1] 2, (1, +inf) 1.
  ASSERT_EQ(hp.bucket_counts_size(), 3);
  EXPECT_EQ(hp.bucket_counts(0), 1u);
  EXPECT_EQ(hp.bucket_counts(1), 2u);
  EXPECT_EQ(hp.bucket_counts(2), 1u);
  EXPECT_EQ(hp.start_time_unix_nano(), 1000u);
  EXPECT_EQ(Attributes(hp.attributes()).at("cause"), "container.cpu_throttle");

  const auto* summary = FindMetric(req, "isoscope_s");
  ASSERT_NE(summary, nullptr);
  ASSERT_TRUE(summary->has_summary());
  ASSERT_EQ(summary->summary().data_points_size(), 1);
  EXPECT_EQ(summary->summary().data_points(0).count(), 1u);
  EXPECT_EQ(summary->summary().data_points(0).sum(), 2.0);
  ASSERT_EQ(summary->summary().data_points(0).quantile_values_size(), 1);
  EXPECT_EQ(summary->summary().data_points(0).quantile_values(0).quantile(), 0.5);

  EXPECT_EQ(otlp::CountDataPoints(req), 4u);
  // The request is valid protobuf that decodes back.
  std::string bytes;
  ASSERT_TRUE(req.SerializeToString(&bytes));
  otlp::MetricsRequest back;
  ASSERT_TRUE(otlp::DecodeMetricsRequest(bytes, &back));
}

TEST(OtlpMetricsBridge, HistogramWithoutInfBucketGetsAnOverflowBucket) {
  prometheus::MetricFamily f;
  f.name = "isoscope_x";
  f.type = prometheus::MetricType::Histogram;
  prometheus::ClientMetric m;
  m.histogram.sample_count = 5;
  m.histogram.sample_sum = 9;
  m.histogram.bucket = {{1, 0.5}, {3, 1.0}};
  f.metric.push_back(m);
  const auto req = otlp::ToOtlpMetrics({f}, {}, 1);
  const auto* x = FindMetric(req, "isoscope_x");
  ASSERT_NE(x, nullptr);
  const auto& p = x->histogram().data_points(0);
  ASSERT_EQ(p.explicit_bounds_size(), 2);
  ASSERT_EQ(p.bucket_counts_size(), 3);
  EXPECT_EQ(p.bucket_counts(0), 1u);
  EXPECT_EQ(p.bucket_counts(1), 2u);
  EXPECT_EQ(p.bucket_counts(2), 2u);
  // No host name given: no host.name attribute; no start time: none set.
  EXPECT_EQ(Attributes(req.resource_metrics(0).resource().attributes()).count("host.name"), 0u);
  EXPECT_EQ(p.start_time_unix_nano(), 0u);
}

TEST(OtlpMetricsBridge, RequestMetricsOverOtlp) {
  auto registry = std::make_shared<prometheus::Registry>();
  RequestMetrics m(registry, 16);
  m.OnSpan(ThrottledSpan(), Workload("/kubepods/pod-a/c1", "pod-a", "c1"));
  const auto req = otlp::ToOtlpMetrics(registry->Collect(), {}, 7);
  const auto* delay = FindMetric(req, "isoscope_request_delay_seconds");
  ASSERT_NE(delay, nullptr);
  ASSERT_TRUE(delay->has_histogram());
  ASSERT_EQ(delay->histogram().data_points_size(), 2);
  bool throttle = false;
  for (const auto& p : delay->histogram().data_points()) {
    const auto a = Attributes(p.attributes());
    EXPECT_EQ(a.at("cgroup"), "/kubepods/pod-a/c1");
    EXPECT_EQ(a.at("pod_uid"), "pod-a");
    EXPECT_EQ(p.explicit_bounds_size(), static_cast<int>(RequestMetrics::Buckets().size()));
    EXPECT_EQ(p.bucket_counts_size(), p.explicit_bounds_size() + 1);
    if (a.at("cause") == "container.cpu_throttle") {
      throttle = true;
      EXPECT_EQ(a.at("layer"), "container");
      EXPECT_EQ(p.count(), 1u);
    }
  }
  EXPECT_TRUE(throttle);
  const auto* verdicts = FindMetric(req, "isoscope_span_verdicts_total");
  ASSERT_NE(verdicts, nullptr);
  ASSERT_TRUE(verdicts->has_sum());
  EXPECT_EQ(verdicts->sum().data_points_size(), 1);
}

TEST(MetricsPusher, PushesTheRegistryPeriodicallyAndAtStop) {
  otlp::testing::TestCollector collector;
  ASSERT_GT(collector.Start(), 0);
  auto registry = std::make_shared<prometheus::Registry>();
  RequestMetrics m(registry, 16);
  m.OnSpan(ThrottledSpan(), Workload("/a"));

  otlp::PusherOptions o;
  o.interval = std::chrono::milliseconds(50);
  o.exporter.endpoint = collector.target();
  o.exporter.batch_delay = std::chrono::milliseconds(10);
  auto pusher = otlp::MetricsPusher::Start(registry, o);
  ASSERT_TRUE(pusher) << pusher.error().message;
  ASSERT_TRUE(otlp::testing::WaitFor([&] { return collector.metric_calls() >= 2; }));
  (*pusher)->Stop();
  (*pusher)->Stop();  // idempotent

  const auto stats = (*pusher)->Stats();
  EXPECT_GE((*pusher)->Pushes(), 3u);  // two periodic ones at least, and the last at Stop
  EXPECT_GT(stats.forwarded, 0u);
  EXPECT_EQ(stats.forwarded, collector.accepted_points());
  EXPECT_TRUE(stats.Balanced());
  EXPECT_EQ(stats.DroppedTotal(), 0u);
  // The pusher's own counters are on the registry (and so in the next snapshot).
  const auto families = registry->Collect();
  const auto* forwarded = Family(families, "isoscope_otlp_agent_metric_points_forwarded_total");
  ASSERT_NE(forwarded, nullptr);
  EXPECT_EQ(forwarded->metric.at(0).counter.value, static_cast<double>(stats.forwarded));
  const auto* pushes = Family(families, "isoscope_otlp_agent_metric_pushes_total");
  ASSERT_NE(pushes, nullptr);
  EXPECT_EQ(pushes->metric.at(0).counter.value, static_cast<double>((*pusher)->Pushes()));
}

TEST(MetricsPusher, RefusesMissingEndpointOrInterval) {
  auto registry = std::make_shared<prometheus::Registry>();
  otlp::PusherOptions o;
  EXPECT_FALSE(otlp::MetricsPusher::Start(registry, o));
  o.exporter.endpoint = "127.0.0.1:1";
  o.interval = std::chrono::milliseconds(0);
  EXPECT_FALSE(otlp::MetricsPusher::Start(registry, o));
  o.interval = std::chrono::milliseconds(1000);
  EXPECT_FALSE(otlp::MetricsPusher::Start(nullptr, o));
}

}  // namespace
}  // namespace isoscope
