#include "exporters/otlp/otlp_pipeline.hpp"

#include <array>
#include <utility>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

namespace isoscope::otlp {
namespace {

using CounterFamily = prometheus::Family<prometheus::Counter>;
using GaugeFamily = prometheus::Family<prometheus::Gauge>;

CounterFamily& Counters(prometheus::Registry& r, const std::string& name, const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}
GaugeFamily& Gauges(prometheus::Registry& r, const std::string& name, const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}

}  // namespace

// The Prometheus side: counters advanced by the growth of the cumulative stats.
struct OtlpPipeline::Metrics {
  struct Signal {
    prometheus::Counter* received;
    prometheus::Counter* forwarded;
    prometheus::Counter* generated;
    std::array<prometheus::Counter*, kDropReasonCount> dropped;
    prometheus::Gauge* queued;
    prometheus::Gauge* in_flight;
    prometheus::Counter* requests;
    prometheus::Counter* invalid;
    prometheus::Counter* retries;
    prometheus::Counter* failures;
  };
  prometheus::Counter* http_unrouted;

  explicit Metrics(prometheus::Registry& r) {
    auto& requests = Counters(r, "isoscope_otlp_requests_total",
                              "OTLP export requests received and decoded, by signal.");
    auto& invalid =
        Counters(r, "isoscope_otlp_requests_invalid_total",
                 "OTLP export requests whose body did not decode (answered "
                 "INVALID_ARGUMENT, HTTP 400) or that the HTTP receiver refused (413 too "
                 "large, 415 media type or encoding), by signal.");
    auto& retries = Counters(r, "isoscope_otlp_export_retries_total",
                             "Export attempts to the upstream collector after the first, by "
                             "signal.");
    auto& failures = Counters(r, "isoscope_otlp_export_failures_total",
                              "Failed export attempts to the upstream collector, by signal.");
    auto& span_received = Counters(r, "isoscope_otlp_spans_received_total",
                                   "Spans received over OTLP (in requests that decoded).");
    auto& span_forwarded = Counters(r, "isoscope_otlp_spans_forwarded_total",
                                    "Spans accepted by the upstream collector.");
    auto& span_generated = Counters(r, "isoscope_otlp_spans_generated_total",
                                    "Spans the agent added itself (child spans per cause).");
    auto& span_dropped = Counters(r, "isoscope_otlp_spans_dropped_total",
                                  "Spans received but not forwarded, by reason.");
    auto& span_queue = Gauges(r, "isoscope_otlp_queue_spans",
                              "Spans waiting in the export queue (bounded by --otlp-queue).");
    auto& span_inflight =
        Gauges(r, "isoscope_otlp_inflight_spans", "Spans in the batch being exported or retried.");
    auto& pt_received = Counters(r, "isoscope_otlp_metric_points_received_total",
                                 "Metric data points received over OTLP.");
    auto& pt_forwarded = Counters(r, "isoscope_otlp_metric_points_forwarded_total",
                                  "Metric data points accepted by the upstream collector.");
    auto& pt_dropped = Counters(r, "isoscope_otlp_metric_points_dropped_total",
                                "Metric data points received but not forwarded, by reason.");
    auto& pt_queue = Gauges(r, "isoscope_otlp_queue_metric_points",
                            "Metric data points waiting in the export queue.");
    auto& pt_inflight = Gauges(r, "isoscope_otlp_inflight_metric_points",
                               "Metric data points in the batch being exported or retried.");
    auto fill = [&](Signal& s, const std::string& signal, CounterFamily& received,
                    CounterFamily& forwarded, CounterFamily& dropped, GaugeFamily& queue,
                    GaugeFamily& inflight, prometheus::Counter* generated) {
      s.received = &received.Add({});
      s.forwarded = &forwarded.Add({});
      s.generated = generated;
      for (std::size_t i = 0; i < kDropReasonCount; ++i) {
        s.dropped[i] =
            &dropped.Add({{"reason", std::string(DropReasonName(static_cast<DropReason>(i)))}});
      }
      s.queued = &queue.Add({});
      s.in_flight = &inflight.Add({});
      s.requests = &requests.Add({{"signal", signal}});
      s.invalid = &invalid.Add({{"signal", signal}});
      s.retries = &retries.Add({{"signal", signal}});
      s.failures = &failures.Add({{"signal", signal}});
    };
    fill(spans, "traces", span_received, span_forwarded, span_dropped, span_queue, span_inflight,
         &span_generated.Add({}));
    fill(points, "metrics", pt_received, pt_forwarded, pt_dropped, pt_queue, pt_inflight, nullptr);
    http_unrouted = &Counters(r, "isoscope_otlp_http_requests_unrouted_total",
                              "Requests to the OTLP/HTTP receiver for another path than "
                              "/v1/traces and /v1/metrics (404) or with another method than "
                              "POST (405).")
                         .Add({});
  }

  void Advance(prometheus::Counter* c, std::uint64_t value) {
    auto& prev = previous[c];
    if (value > prev) c->Increment(static_cast<double>(value - prev));
    prev = std::max(prev, value);
  }

  void Update(Signal& m, const SignalStats& s, std::uint64_t requests, std::uint64_t invalid) {
    Advance(m.received, s.received);
    Advance(m.forwarded, s.forwarded);
    if (m.generated) Advance(m.generated, s.generated);
    for (std::size_t i = 0; i < kDropReasonCount; ++i) Advance(m.dropped[i], s.dropped[i]);
    m.queued->Set(static_cast<double>(s.queued));
    m.in_flight->Set(static_cast<double>(s.in_flight));
    Advance(m.requests, requests);
    Advance(m.invalid, invalid);
    Advance(m.retries, s.retries);
    Advance(m.failures, s.export_failed);
  }

  Signal spans{};
  Signal points{};
  std::map<prometheus::Counter*, std::uint64_t> previous;
};

OtlpPipeline::OtlpPipeline(PipelineOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<OtlpPipeline>> OtlpPipeline::Create(PipelineOptions options) {
  std::unique_ptr<OtlpPipeline> p(new OtlpPipeline(std::move(options)));
  if (!p->options_.exporter.endpoint.empty()) {
    auto exporter = OtlpExporter::Create(p->options_.exporter);
    if (!exporter) return exporter.error();
    p->exporter_ = std::move(*exporter);
  }
  p->receiver_ = std::make_unique<OtlpReceiver>(p.get(), p.get(), p->options_.receiver);
  if (!p->options_.http_listen.empty()) {
    p->http_receiver_ = std::make_unique<OtlpHttpReceiver>(p.get(), p.get(), p->options_.receiver);
  }
  return p;
}

OtlpPipeline::~OtlpPipeline() { Stop(); }

void OtlpPipeline::SetEnricher(Enricher enricher) { enricher_ = std::move(enricher); }

void OtlpPipeline::SetEnricher(std::function<void(TraceRequest& req)> enricher) {
  if (!enricher) {
    enricher_ = nullptr;
    return;
  }
  enricher_ = [f = std::move(enricher)](TraceRequest& req, const PeerInfo&) { f(req); };
}

Status OtlpPipeline::Start() {
  // Starts one receiver; a busy optional address only warns.
  auto start = [](auto& receiver, const std::string& addr, bool optional, std::string_view what,
                  std::string_view flag, bool* listening) -> Status {
    auto st = receiver.Start(addr);
    *listening = st.ok();
    if (st || !optional) return st;
    spdlog::warn("{}: {} receiver off (choose another address with {})", st.error().message, what,
                 flag);
    return {};
  };
  if (!options_.listen.empty()) {
    auto st = start(*receiver_, options_.listen, options_.listen_optional, "OTLP/gRPC",
                    "--otlp-listen", &grpc_listening_);
    if (!st) return st;
  }
  if (http_receiver_) {
    auto st = start(*http_receiver_, options_.http_listen, options_.http_listen_optional,
                    "OTLP/HTTP", "--otlp-http-listen", &http_listening_);
    if (!st) {
      receiver_->Stop();
      grpc_listening_ = false;
      return st;
    }
  }
  if (!exporter_ && Listening()) {
    std::string where = grpc_listening_ ? receiver_->Address() : "";
    if (http_listening_) {
      where += (where.empty() ? "" : " and ") + http_receiver_->Address() + " (HTTP)";
    }
    spdlog::warn(
        "OTLP: no --otlp-endpoint: spans received on {} are counted and dropped "
        "(isoscope_otlp_spans_dropped_total{{reason=\"no_endpoint\"}})",
        where);
  }
  return {};
}

void OtlpPipeline::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (receiver_) receiver_->Stop();
  if (http_receiver_) http_receiver_->Stop();
  if (exporter_) exporter_->Stop();
  if (metrics_thread_.joinable()) {
    {
      std::lock_guard lk(metrics_mu_);
      stop_metrics_ = true;
    }
    metrics_cv_.notify_all();
    metrics_thread_.join();
  }
  if (!receiver_) return;  // Create failed half-way
  RefreshMetrics();
  const PipelineStats s = Stats();
  spdlog::info("OTLP totals: {} spans received, {} forwarded, {} dropped; {} invalid requests",
               s.spans.received, s.spans.forwarded, s.spans.DroppedTotal(),
               s.receiver.invalid_requests);
}

void OtlpPipeline::OnExport(TraceRequest&& req, const PeerInfo& peer) {
  if (enricher_) {
    const std::size_t before = CountSpans(req);
    enricher_(req, peer);
    const std::size_t after = CountSpans(req);
    if (after > before) spans_generated_.fetch_add(after - before, std::memory_order_relaxed);
  }
  if (exporter_) {
    exporter_->Enqueue(std::move(req));
  } else {
    spans_no_endpoint_.fetch_add(CountSpans(req), std::memory_order_relaxed);
  }
}

void OtlpPipeline::OnExportMetrics(MetricsRequest&& req, const PeerInfo& /*peer*/) {
  if (exporter_) {
    exporter_->EnqueueMetrics(std::move(req));
  } else {
    points_no_endpoint_.fetch_add(CountDataPoints(req), std::memory_order_relaxed);
  }
}

PipelineStats OtlpPipeline::Stats() const {
  PipelineStats s;
  s.receiver = receiver_->Stats();
  if (http_receiver_) s.receiver += http_receiver_->Stats();
  if (exporter_) {
    s.spans = exporter_->SpanStats();
    s.points = exporter_->PointStats();
  }
  // The receiver saw more than the exporter: the spans it removed, and those with no endpoint.
  s.spans.received = s.receiver.spans;
  s.spans.generated = spans_generated_.load(std::memory_order_relaxed);
  s.spans.dropped[static_cast<std::size_t>(DropReason::kInvalid)] += s.receiver.invalid_spans;
  s.spans.dropped[static_cast<std::size_t>(DropReason::kNoEndpoint)] +=
      spans_no_endpoint_.load(std::memory_order_relaxed);
  s.points.received = s.receiver.metric_points;
  s.points.dropped[static_cast<std::size_t>(DropReason::kNoEndpoint)] +=
      points_no_endpoint_.load(std::memory_order_relaxed);
  return s;
}

void OtlpPipeline::ExposeMetrics(const std::shared_ptr<prometheus::Registry>& registry) {
  {
    std::lock_guard lk(metrics_mu_);
    if (metrics_ || !registry) return;
    metrics_ = std::make_unique<Metrics>(*registry);
  }
  RefreshMetrics();
  metrics_thread_ = std::thread([this] {
    std::unique_lock lk(metrics_mu_);
    while (!metrics_cv_.wait_for(lk, options_.metrics_period, [&] { return stop_metrics_; })) {
      lk.unlock();
      RefreshMetrics();
      lk.lock();
    }
  });
}

void OtlpPipeline::RefreshMetrics() {
  const PipelineStats s = Stats();
  std::lock_guard lk(metrics_mu_);
  if (!metrics_) return;
  const auto& r = s.receiver;
  metrics_->Update(metrics_->spans, s.spans, r.trace_requests, r.invalid_trace_requests);
  metrics_->Update(metrics_->points, s.points, r.metric_requests,
                   r.invalid_requests - r.invalid_trace_requests);
  metrics_->Advance(metrics_->http_unrouted, r.unrouted_requests);
}

}  // namespace isoscope::otlp
