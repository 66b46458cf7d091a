// The OTLP path of `isoscope agent` (docs/otlp.md):
//
//   application --OTLP/gRPC--> OtlpReceiver ----+
//   application --OTLP/HTTP--> OtlpHttpReceiver +--> Enricher (hook) --> OtlpExporter --> collector
//
// The pipeline is the sink of both receivers (the HTTP one only when an address is given): each
// decoded request goes through the enricher (a hook that later steps use to add isoscope's
// attributes to spans; the default does nothing) and then into the exporter's queue, or, with no
// upstream endpoint, is counted as dropped (reason no_endpoint). Its counters are exposed as
// Prometheus metrics on a registry:
//
//   isoscope_otlp_requests_total{signal}           requests decoded (signal: traces, metrics)
//   isoscope_otlp_requests_invalid_total{signal}   requests that did not decode (INVALID_ARGUMENT,
//                                                  HTTP 400) or were refused (HTTP 413, 415)
//   isoscope_otlp_http_requests_unrouted_total     HTTP requests to another path or method
//   isoscope_otlp_spans_received_total             spans in decoded requests
//   isoscope_otlp_spans_forwarded_total            spans the upstream collector accepted
//   isoscope_otlp_spans_generated_total            child spans the enricher added
//   isoscope_otlp_spans_dropped_total{reason}      DropReasonName(): queue_full,
//                                                  rejected_by_collector, non_retryable,
//                                                  retry_exhausted, shutdown, invalid, no_endpoint
//   isoscope_otlp_queue_spans                      spans waiting in the export queue (gauge)
//   isoscope_otlp_inflight_spans                   spans in the batch being exported (gauge)
//   isoscope_otlp_metric_points_{received,forwarded,dropped}_total,
//   isoscope_otlp_queue_metric_points isoscope_otlp_export_retries_total{signal},
//   isoscope_otlp_export_failures_total{signal}
//
// and received (+ generated) == forwarded + dropped + queue + inflight for spans and for data
// points once no request is being handled (PipelineStats).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "collectors/otlp/otlp_codec.hpp"
#include "collectors/otlp/otlp_http_receiver.hpp"
#include "collectors/otlp/otlp_receiver.hpp"
#include "common/result.hpp"
#include "exporters/otlp/otlp_exporter.hpp"

namespace prometheus {
class Counter;
class Gauge;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace isoscope::otlp {

struct PipelineOptions {
  std::string listen = "127.0.0.1:4317";  // "host:port" of the gRPC receiver; "" = none
  std::string http_listen;                // "host:port" of the OTLP/HTTP receiver; "" = none
  // When an address is optional (a default the user did not choose) and cannot be bound, Start
  // leaves that receiver off with a warning instead of failing.
  bool listen_optional = false;
  bool http_listen_optional = false;
  ReceiverOptions receiver;
  ExporterOptions exporter;  // exporter.endpoint empty: no upstream collector
  // How often the Prometheus metrics are refreshed from the counters.
  std::chrono::milliseconds metrics_period{250};
};

// All stages together. spans.received counts every span of every decoded request; spans
// removed by the receiver (invalid ids) and spans received without an endpoint are in
// spans.dropped (kInvalid, kNoEndpoint).
struct PipelineStats {
  ReceiverStats receiver;  // both receivers together
  SignalStats spans;
  SignalStats points;
};

class OtlpPipeline final : public SpanSink, public MetricSink {
 public:
  // Adds attributes to (or otherwise edits) spans before they are queued for export. Runs on
  // gRPC threads, concurrently; must be thread-safe and quick.
  using Enricher = std::function<void(TraceRequest& req, const PeerInfo& peer)>;

  // Creates the exporter when options.exporter.endpoint is set; does not listen yet.
  static Result<std::unique_ptr<OtlpPipeline>> Create(PipelineOptions options);
  ~OtlpPipeline() override;
  OtlpPipeline(const OtlpPipeline&) = delete;
  OtlpPipeline& operator=(const OtlpPipeline&) = delete;

  // Set before Start (not synchronised with requests in progress). An empty function restores
  // the default, which does nothing.
  void SetEnricher(Enricher enricher);
  void SetEnricher(std::function<void(TraceRequest& req)> enricher);

  // Starts the receivers whose address is set. Fails when a non-optional address cannot be bound
  // (the receivers already started are stopped again).
  Status Start();
  // At least one receiver is listening.
  [[nodiscard]] bool Listening() const { return grpc_listening_ || http_listening_; }
  // Stops the receiver, then the exporter (flushing for up to exporter.shutdown_flush), and
  // refreshes the metrics one last time. Idempotent.
  void Stop();

  // Registers the isoscope_otlp_* families on `registry` and keeps them current (every
  // metrics_period, and at Stop). Call at most once.
  void ExposeMetrics(const std::shared_ptr<prometheus::Registry>& registry);

  [[nodiscard]] PipelineStats Stats() const;
  [[nodiscard]] const OtlpReceiver& Receiver() const { return *receiver_; }
  // Null without options.http_listen.
  [[nodiscard]] const OtlpHttpReceiver* HttpReceiver() const { return http_receiver_.get(); }
  [[nodiscard]] bool HasExporter() const { return exporter_ != nullptr; }

  // SpanSink / MetricSink (called by the receiver).
  void OnExport(TraceRequest&& req, const PeerInfo& peer) override;
  void OnExportMetrics(MetricsRequest&& req, const PeerInfo& peer) override;

 private:
  struct Metrics;
  explicit OtlpPipeline(PipelineOptions options);
  void RefreshMetrics();

  const PipelineOptions options_;
  Enricher enricher_;
  std::unique_ptr<OtlpExporter> exporter_;
  std::unique_ptr<OtlpReceiver> receiver_;
  std::unique_ptr<OtlpHttpReceiver> http_receiver_;
  bool grpc_listening_ = false;
  bool http_listening_ = false;
  std::atomic<std::uint64_t> spans_no_endpoint_{0};
  std::atomic<std::uint64_t> spans_generated_{0};  // added by the enricher
  std::atomic<std::uint64_t> points_no_endpoint_{0};

  std::unique_ptr<Metrics> metrics_;
  std::mutex metrics_mu_;  // guards metrics_ refreshes and stop_metrics_
  std::condition_variable metrics_cv_;
  bool stop_metrics_ = false;
  std::thread metrics_thread_;
  bool stopped_ = false;
};

}  // namespace isoscope::otlp
