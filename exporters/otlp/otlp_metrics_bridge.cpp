#include "exporters/otlp/otlp_metrics_bridge.hpp"

#include <unistd.h>
#include <algorithm>
#include <array>
#include <cmath>
#include <utility>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>

namespace isoscope::otlp {
namespace {

namespace pb = opentelemetry::proto;

void AddStringAttribute(google::protobuf::RepeatedPtrField<pb::common::v1::KeyValue>* attrs,
                        const std::string& key, const std::string& value) {
  auto* kv = attrs->Add();
  kv->set_key(key);
  kv->mutable_value()->set_string_value(value);
}

template <typename Point>
void FillPoint(Point* p, const prometheus::ClientMetric& m, std::uint64_t start,
               std::uint64_t now) {
  for (const auto& label : m.label)
    AddStringAttribute(p->mutable_attributes(), label.name, label.value);
  if (start != 0) p->set_start_time_unix_nano(start);
  p->set_time_unix_nano(now);
}

void FillHistogramPoint(pb::metrics::v1::HistogramDataPoint* p,
                        const prometheus::ClientMetric::Histogram& h) {
  p->set_count(h.sample_count);
  p->set_sum(h.sample_sum);
  std::uint64_t below = 0;  // cumulative count of the buckets so far
  for (const auto& b : h.bucket) {
    const std::uint64_t in_bucket = b.cumulative_count >= below ? b.cumulative_count - below : 0;
    below = std::max(below, b.cumulative_count);
    p->add_bucket_counts(in_bucket);
    if (std::isfinite(b.upper_bound)) p->add_explicit_bounds(b.upper_bound);
  }
  // OTLP: one more bucket than bounds, the last one unbounded. Prometheus ends with +Inf; when
  // a source does not, what lies above the last bound is the rest of the count.
  if (p->bucket_counts_size() == p->explicit_bounds_size()) {
    p->add_bucket_counts(h.sample_count >= below ? h.sample_count - below : 0);
  }
}

}  // namespace

std::string HostName() {
  std::array<char, 256> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0) return {};
  return {buf.data()};
}

std::uint64_t UnixNanoNow() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

MetricsRequest ToOtlpMetrics(const std::vector<prometheus::MetricFamily>& families,
                             const MetricsBridgeOptions& options, std::uint64_t now_unix_nano) {
  MetricsRequest req;
  auto* rm = req.add_resource_metrics();
  auto* resource_attrs = rm->mutable_resource()->mutable_attributes();
  AddStringAttribute(resource_attrs, "service.name", options.service_name);
  if (!options.host_name.empty())
    AddStringAttribute(resource_attrs, "host.name", options.host_name);
  auto* sm = rm->add_scope_metrics();
  sm->mutable_scope()->set_name("isoscope");
  const std::uint64_t start = options.start_time_unix_nano;

  for (const prometheus::MetricFamily& family : families) {
    if (family.name.compare(0, options.prefix.size(), options.prefix) != 0) continue;
    if (family.metric.empty()) continue;
    auto* metric = sm->add_metrics();
    metric->set_name(family.name);
    metric->set_description(family.help);
    switch (family.type) {
      case prometheus::MetricType::Counter: {
        auto* sum = metric->mutable_sum();
        sum->set_aggregation_temporality(pb::metrics::v1::AGGREGATION_TEMPORALITY_CUMULATIVE);
        sum->set_is_monotonic(true);
        for (const auto& m : family.metric) {
          auto* p = sum->add_data_points();
          FillPoint(p, m, start, now_unix_nano);
          p->set_as_double(m.counter.value);
        }
        break;
      }
      case prometheus::MetricType::Gauge:
      case prometheus::MetricType::Untyped: {
        auto* gauge = metric->mutable_gauge();
        const bool untyped = family.type == prometheus::MetricType::Untyped;
        for (const auto& m : family.metric) {
          auto* p = gauge->add_data_points();
          FillPoint(p, m, 0, now_unix_nano);
          p->set_as_double(untyped ? m.untyped.value : m.gauge.value);
        }
        break;
      }
      case prometheus::MetricType::Histogram: {
        auto* hist = metric->mutable_histogram();
        hist->set_aggregation_temporality(pb::metrics::v1::AGGREGATION_TEMPORALITY_CUMULATIVE);
        for (const auto& m : family.metric) {
          auto* p = hist->add_data_points();
          FillPoint(p, m, start, now_unix_nano);
          FillHistogramPoint(p, m.histogram);
        }
        break;
      }
      case prometheus::MetricType::Summary: {
        auto* summary = metric->mutable_summary();
        for (const auto& m : family.metric) {
          auto* p = summary->add_data_points();
          FillPoint(p, m, start, now_unix_nano);
          p->set_count(m.summary.sample_count);
          p->set_sum(m.summary.sample_sum);
          for (const auto& q : m.summary.quantile) {
            auto* v = p->add_quantile_values();
            v->set_quantile(q.quantile);
            v->set_value(q.value);
          }
        }
        break;
      }
    }
  }
  return req;
}

MetricsPusher::MetricsPusher(std::shared_ptr<prometheus::Registry> registry, PusherOptions options)
    : options_(std::move(options)), registry_(std::move(registry)) {}

Result<std::unique_ptr<MetricsPusher>> MetricsPusher::Start(
    std::shared_ptr<prometheus::Registry> registry, PusherOptions options) {
  if (!registry) return MakeError("OTLP metrics push: no registry");
  if (options.exporter.endpoint.empty()) {
    return MakeError("OTLP metrics push: no upstream endpoint");
  }
  if (options.interval <= std::chrono::milliseconds::zero()) {
    return MakeError("OTLP metrics push: interval must be positive");
  }
  std::unique_ptr<MetricsPusher> p(new MetricsPusher(std::move(registry), std::move(options)));
  auto exporter = OtlpExporter::Create(p->options_.exporter);
  if (!exporter) return exporter.error().Wrap("OTLP metrics push");
  p->exporter_ = std::move(*exporter);

  auto& r = *p->registry_;
  p->pushes_ = &prometheus::BuildCounter()
                    .Name("isoscope_otlp_agent_metric_pushes_total")
                    .Help("Snapshots of the agent's own metrics queued for OTLP export.")
                    .Register(r)
                    .Add({});
  p->forwarded_ = &prometheus::BuildCounter()
                       .Name("isoscope_otlp_agent_metric_points_forwarded_total")
                       .Help(
                           "Data points of the agent's own metrics accepted by the upstream "
                           "collector.")
                       .Register(r)
                       .Add({});
  auto& dropped = prometheus::BuildCounter()
                      .Name("isoscope_otlp_agent_metric_points_dropped_total")
                      .Help("Data points of the agent's own metrics not forwarded, by reason.")
                      .Register(r);
  for (std::size_t i = 0; i < kDropReasonCount; ++i) {
    const auto reason = static_cast<DropReason>(i);
    // The pipeline's reasons (invalid, no_endpoint) cannot happen here.
    if (reason == DropReason::kInvalid || reason == DropReason::kNoEndpoint) continue;
    p->dropped_[i] = &dropped.Add({{"reason", std::string(DropReasonName(reason))}});
  }

  MetricsPusher* self = p.get();
  p->thread_ = std::thread([self] {
    std::unique_lock lk(self->mu_);
    while (!self->cv_.wait_for(lk, self->options_.interval, [self] { return self->stop_; })) {
      lk.unlock();
      self->PushNow();
      lk.lock();
    }
  });
  return p;
}

MetricsPusher::~MetricsPusher() { Stop(); }

void MetricsPusher::PushNow() {
  MetricsRequest req = ToOtlpMetrics(registry_->Collect(), options_.bridge, UnixNanoNow());
  {
    std::lock_guard lk(mu_);
    if (stopped_) return;
    ++push_count_;
  }
  if (pushes_) pushes_->Increment();
  exporter_->EnqueueMetrics(std::move(req));
  RefreshCounters();
}

void MetricsPusher::Stop() {
  {
    std::lock_guard lk(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (!exporter_) return;
  PushNow();  // the last values, so that the collector sees the totals at exit
  {
    std::lock_guard lk(mu_);
    stopped_ = true;
  }
  exporter_->Stop();
  RefreshCounters();
}

void MetricsPusher::RefreshCounters() {
  const SignalStats s = exporter_->PointStats();
  std::lock_guard lk(mu_);
  auto advance = [this](prometheus::Counter* c, std::uint64_t value) {
    if (c == nullptr) return;
    auto& prev = previous_[c];
    if (value > prev) c->Increment(static_cast<double>(value - prev));
    prev = std::max(prev, value);
  };
  advance(forwarded_, s.forwarded);
  for (std::size_t i = 0; i < kDropReasonCount; ++i) advance(dropped_[i], s.dropped[i]);
}

SignalStats MetricsPusher::Stats() const { return exporter_->PointStats(); }

std::uint64_t MetricsPusher::Pushes() const {
  std::lock_guard lk(mu_);
  return push_count_;
}

}  // namespace isoscope::otlp
