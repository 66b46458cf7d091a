// OTLP/gRPC exporter: forwards spans (and metric data points) to an upstream collector
// (docs/otlp.md, "Exporter").
//
// Enqueue never blocks on the network: requests go into a bounded in-memory queue per signal,
// counted in items (spans, data points). When a new request does not fit, the OLDEST queued items
// are dropped (counted, reason queue_full). One sender thread per signal batches queued requests
// (up to max_batch items / max_batch_bytes) and exports them, retrying with capped exponential
// backoff and jitter on UNAVAILABLE, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED, for at most
// retry.max_elapsed per batch; other failures are not retried. A collector's partial success
// (rejected_spans / rejected_data_points) counts the rejected items as dropped.
//
// Every item handed to Enqueue ends up in exactly one place, so at every moment
//   received == forwarded + dropped (all reasons) + queued + in_flight
// (SignalStats::Balanced; tests check it).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "collectors/otlp/otlp_codec.hpp"
#include "common/result.hpp"

namespace isoscope::otlp {

// Why items were dropped. Stable snake_case names (DropReasonName) are metric label values.
// kInvalid and kNoEndpoint are counted by the pipeline (OtlpPipeline), the others here.
enum class DropReason : std::uint8_t {
  kQueueFull,            // queue_full: the queue was full, the oldest items made room
  kRejectedByCollector,  // rejected_by_collector: partial success from the collector
  kNonRetryable,         // non_retryable: the export failed with a code that is not retried
  kRetryExhausted,       // retry_exhausted: retryable failures for longer than max_elapsed
  kShutdown,             // shutdown: still queued or in flight when the exporter stopped
  kInvalid,              // invalid: span ids invalid (removed by the receiver)
  kNoEndpoint,           // no_endpoint: received while no upstream collector is configured
  kCount
};
inline constexpr std::size_t kDropReasonCount = static_cast<std::size_t>(DropReason::kCount);
std::string_view DropReasonName(DropReason reason);

struct SignalStats {
  std::uint64_t received = 0;   // items handed to Enqueue
  std::uint64_t generated = 0;  // items the agent added itself (child spans per cause)
  std::uint64_t forwarded = 0;  // items the collector accepted
  std::array<std::uint64_t, kDropReasonCount> dropped{};
  std::uint64_t queued = 0;         // items waiting in the queue (at most the queue bound)
  std::uint64_t in_flight = 0;      // items in the batch being sent or retried
  std::uint64_t export_ok = 0;      // export calls that succeeded (fully or partially)
  std::uint64_t export_failed = 0;  // export attempts that failed (each attempt counts)
  std::uint64_t retries = 0;        // attempts after the first, over all batches

  [[nodiscard]] std::uint64_t DroppedBy(DropReason r) const {
    return dropped[static_cast<std::size_t>(r)];
  }
  [[nodiscard]] std::uint64_t DroppedTotal() const;
  [[nodiscard]] std::uint64_t InQueue() const { return queued + in_flight; }
  [[nodiscard]] bool Balanced() const {
    return received + generated == forwarded + DroppedTotal() + queued + in_flight;
  }
};

struct RetryPolicy {
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{2000};
  double multiplier = 2.0;
  double jitter = 0.2;  // each delay is scaled by a uniform factor in [1 - jitter, 1 + jitter]
  std::chrono::milliseconds max_elapsed{60000};  // per batch, from its first attempt
};

// The delay before retry number `attempt` (0 = the first retry): initial_backoff *
// multiplier^attempt, capped at max_backoff, times (1 - jitter + 2 * jitter * unit), capped at
// max_backoff again. `unit` is a uniform random number in [0, 1).
std::chrono::milliseconds BackoffDelay(const RetryPolicy& policy, int attempt, double unit);

struct ExporterOptions {
  std::string endpoint;  // "host:port" of an OTLP/gRPC collector (plaintext gRPC)
  std::size_t max_queue_spans = 8192;
  std::size_t max_batch_spans = 512;
  std::size_t max_queue_points = 8192;
  std::size_t max_batch_points = 2048;
  std::size_t max_batch_bytes = std::size_t{2} << 20;  // soft: one request always fits a batch
  // How long the sender waits for a batch to fill before sending a smaller one.
  std::chrono::milliseconds batch_delay{200};
  std::chrono::milliseconds rpc_timeout{10000};
  RetryPolicy retry;
  // Upper bound of gRPC's own reconnect backoff, so that a collector coming back is found soon.
  std::chrono::milliseconds max_reconnect_backoff{2000};
  // Stop() keeps exporting for up to this long before dropping what is left (reason shutdown).
  std::chrono::milliseconds shutdown_flush{2000};
};

class OtlpExporter {
 public:
  // Validates the options and starts the sender threads. Connects lazily: a collector that is
  // down is not an error here (exports are retried).
  static Result<std::unique_ptr<OtlpExporter>> Create(ExporterOptions options);
  ~OtlpExporter();  // Stop()
  OtlpExporter(const OtlpExporter&) = delete;
  OtlpExporter& operator=(const OtlpExporter&) = delete;

  // Thread-safe, never blocks on the network. Requests without items are ignored.
  void Enqueue(TraceRequest&& req);
  void EnqueueMetrics(MetricsRequest&& req);

  // Waits until nothing is queued or in flight (true) or `timeout` passed (false).
  bool Flush(std::chrono::milliseconds timeout);
  // Exports what it can within shutdown_flush, drops the rest (reason shutdown) and joins the
  // threads. Enqueue after Stop drops (reason shutdown). Idempotent.
  void Stop();

  [[nodiscard]] SignalStats SpanStats() const;
  [[nodiscard]] SignalStats PointStats() const;

 private:
  class Channel;
  template <typename Req>
  class Signal;

  explicit OtlpExporter(ExporterOptions options);

  const ExporterOptions options_;
  std::shared_ptr<Channel> channel_;
  std::unique_ptr<Signal<TraceRequest>> spans_;
  std::unique_ptr<Signal<MetricsRequest>> points_;
};

}  // namespace isoscope::otlp
