// The agent's own metrics over OTLP (docs/otlp-correlation.md, "Span metrics"): converts what a
// Prometheus registry collects into an ExportMetricsServiceRequest, and a pusher that sends that
// snapshot to the upstream collector periodically.
//
// Conversion (one Metric per family whose name starts with `prefix`, label pairs -> string
// attributes, start_time = agent start, time = the snapshot's time):
//   counter   -> Sum, cumulative, monotonic, as_double
//   gauge     -> Gauge, as_double (untyped families too)
//   histogram -> Histogram, cumulative: explicit_bounds = the finite upper bounds, bucket_counts
//                per bucket (Prometheus' cumulative counts differenced; the last is +Inf), count,
//                sum
//   summary   -> Summary: count, sum, quantile values
// Resource: service.name (default "isoscope"), host.name; scope "isoscope".
//
// The pusher has its own OtlpExporter (own queue and sender thread, same endpoint), so that the
// receiver pipeline's counters keep describing only what applications sent. Its counters go on
// the same registry:
//   isoscope_otlp_agent_metric_pushes_total                 snapshots queued for export
//   isoscope_otlp_agent_metric_points_forwarded_total       data points the collector accepted
//   isoscope_otlp_agent_metric_points_dropped_total{reason} DropReasonName()
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/metric_family.h>

#include "collectors/otlp/otlp_codec.hpp"
#include "common/result.hpp"
#include "exporters/otlp/otlp_exporter.hpp"

namespace prometheus {
class Counter;
class Registry;
}  // namespace prometheus

namespace isoscope::otlp {

struct MetricsBridgeOptions {
  std::string prefix = "isoscope_";  // only families whose name starts with this
  std::string service_name = "isoscope";
  std::string host_name;                   // empty: no host.name attribute
  std::uint64_t start_time_unix_nano = 0;  // when the counters started (agent start)
};

// The families (from prometheus::Registry::Collect) as one OTLP request, at `now_unix_nano`.
MetricsRequest ToOtlpMetrics(const std::vector<prometheus::MetricFamily>& families,
                             const MetricsBridgeOptions& options, std::uint64_t now_unix_nano);

// This host's name (gethostname), empty if unknown.
std::string HostName();
std::uint64_t UnixNanoNow();

struct PusherOptions {
  std::chrono::milliseconds interval{10000};
  MetricsBridgeOptions bridge;
  ExporterOptions exporter;  // exporter.endpoint: the upstream collector (required)
};

class MetricsPusher {
 public:
  // Starts the exporter and the push thread; pushes `registry`'s metrics every interval and
  // registers its own counters on it.
  static Result<std::unique_ptr<MetricsPusher>> Start(
      std::shared_ptr<prometheus::Registry> registry, PusherOptions options);
  ~MetricsPusher();  // Stop()
  MetricsPusher(const MetricsPusher&) = delete;
  MetricsPusher& operator=(const MetricsPusher&) = delete;

  // Pushes one last snapshot, stops the exporter (flushing for up to exporter.shutdown_flush)
  // and joins the thread. Idempotent.
  void Stop();
  // Queues one snapshot now (also what the thread does every interval).
  void PushNow();

  [[nodiscard]] SignalStats Stats() const;
  [[nodiscard]] std::uint64_t Pushes() const;

 private:
  MetricsPusher(std::shared_ptr<prometheus::Registry> registry, PusherOptions options);
  void RefreshCounters();

  const PusherOptions options_;
  const std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<OtlpExporter> exporter_;

  prometheus::Counter* pushes_ = nullptr;
  prometheus::Counter* forwarded_ = nullptr;
  std::array<prometheus::Counter*, kDropReasonCount> dropped_{};

  mutable std::mutex mu_;  // guards the fields below and the counter refresh
  std::condition_variable cv_;
  bool stop_ = false;
  bool stopped_ = false;
  std::uint64_t push_count_ = 0;
  std::map<const prometheus::Counter*, std::uint64_t> previous_;
  std::thread thread_;
};

}  // namespace isoscope::otlp
