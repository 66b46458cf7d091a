#include "exporters/otlp/otlp_exporter.hpp"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "collectors/otlp/grpc_log.hpp"
#include "opentelemetry/proto/collector/metrics/v1/metrics_service.grpc.pb.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"

namespace isoscope::otlp {
namespace {

namespace trace_v1 = opentelemetry::proto::collector::trace::v1;
namespace metrics_v1 = opentelemetry::proto::collector::metrics::v1;

using Clock = std::chrono::steady_clock;

// How often a signal logs a summary of new drops at most (never per drop).
constexpr auto kDropReportPeriod = std::chrono::seconds(10);

bool Retryable(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
         code == grpc::StatusCode::DEADLINE_EXCEEDED;
}

std::string_view CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      break;
  }
  return "?";
}

// Per-signal glue: counting, trimming, the RPC.
template <typename Req>
struct Traits;

template <>
struct Traits<TraceRequest> {
  using Response = TraceResponse;
  static constexpr std::string_view kSignal = "traces";
  static constexpr std::string_view kItems = "spans";
  static std::size_t Count(const TraceRequest& r) { return CountSpans(r); }
  static std::size_t DropOldest(TraceRequest* r, std::size_t n) { return DropOldestSpans(r, n); }
  static std::int64_t Rejected(const Response& r) { return r.partial_success().rejected_spans(); }
  static const std::string& RejectMessage(const Response& r) {
    return r.partial_success().error_message();
  }
};

template <>
struct Traits<MetricsRequest> {
  using Response = MetricsResponse;
  static constexpr std::string_view kSignal = "metrics";
  static constexpr std::string_view kItems = "data points";
  static std::size_t Count(const MetricsRequest& r) { return CountDataPoints(r); }
  static std::size_t DropOldest(MetricsRequest* r, std::size_t n) {
    return DropOldestMetrics(r, n);
  }
  static std::int64_t Rejected(const Response& r) {
    return r.partial_success().rejected_data_points();
  }
  static const std::string& RejectMessage(const Response& r) {
    return r.partial_success().error_message();
  }
};

}  // namespace

std::string_view DropReasonName(DropReason reason) {
  switch (reason) {
    case DropReason::kQueueFull:
      return "queue_full";
    case DropReason::kRejectedByCollector:
      return "rejected_by_collector";
    case DropReason::kNonRetryable:
      return "non_retryable";
    case DropReason::kRetryExhausted:
      return "retry_exhausted";
    case DropReason::kShutdown:
      return "shutdown";
    case DropReason::kInvalid:
      return "invalid";
    case DropReason::kNoEndpoint:
      return "no_endpoint";
    case DropReason::kCount:
      break;
  }
  return "unknown";
}

std::uint64_t SignalStats::DroppedTotal() const {
  std::uint64_t n = 0;
  for (const auto d : dropped) n += d;
  return n;
}

std::chrono::milliseconds BackoffDelay(const RetryPolicy& policy, int attempt, double unit) {
  const auto cap = static_cast<double>(policy.max_backoff.count());
  double base = static_cast<double>(policy.initial_backoff.count()) *
                std::pow(std::max(policy.multiplier, 1.0), std::max(attempt, 0));
  if (!std::isfinite(base) || base > cap) base = cap;
  const double jitter = std::clamp(policy.jitter, 0.0, 1.0);
  double delay = base * (1.0 - jitter + 2.0 * jitter * std::clamp(unit, 0.0, 1.0));
  delay = std::clamp(delay, 0.0, cap);
  return std::chrono::milliseconds(static_cast<std::int64_t>(delay));
}

// The gRPC channel and stubs shared by both signals.
class OtlpExporter::Channel {
 public:
  explicit Channel(const ExporterOptions& o) {
    grpc::ChannelArguments args;
    const int max_reconnect = static_cast<int>(o.max_reconnect_backoff.count());
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, max_reconnect);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::min(max_reconnect, 250));
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, std::min(max_reconnect, 250));
    args.SetUserAgentPrefix("isoscope-otlp-exporter");
    channel_ = grpc::CreateCustomChannel(o.endpoint, grpc::InsecureChannelCredentials(), args);
    traces_ = trace_v1::TraceService::NewStub(channel_);
    metrics_ = metrics_v1::MetricsService::NewStub(channel_);
  }
  grpc::Status Call(grpc::ClientContext* ctx, const TraceRequest& req, TraceResponse* resp) {
    return traces_->Export(ctx, req, resp);
  }
  grpc::Status Call(grpc::ClientContext* ctx, const MetricsRequest& req, MetricsResponse* resp) {
    return metrics_->Export(ctx, req, resp);
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<trace_v1::TraceService::Stub> traces_;
  std::unique_ptr<metrics_v1::MetricsService::Stub> metrics_;
};

// One signal: its queue, its sender thread, its counters.
template <typename Req>
class OtlpExporter::Signal {
 public:
  using T = Traits<Req>;
  using Response = typename T::Response;

  Signal(const ExporterOptions& o, std::shared_ptr<Channel> channel, std::size_t max_queue,
         std::size_t max_batch)
      : o_(o),
        channel_(std::move(channel)),
        max_queue_(max_queue),
        max_batch_(max_batch),
        rng_(std::random_device{}()),
        last_report_(Clock::now()) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Signal() { Stop(Clock::now()); }

  void Enqueue(Req&& req) {
    std::size_t n = T::Count(req);
    if (n == 0) return;
    std::lock_guard lk(mu_);
    stats_.received += n;
    if (stopping_) {
      Drop(DropReason::kShutdown, n);
      return;
    }
    if (n > max_queue_) {  // keep the newest items of an oversized request
      const std::size_t d = T::DropOldest(&req, n - max_queue_);
      Drop(DropReason::kQueueFull, d);
      n -= d;
      if (n == 0) return;
    }
    while (queued_ + n > max_queue_ && !entries_.empty()) {
      Entry& front = entries_.front();
      const std::size_t need = queued_ + n - max_queue_;
      if (front.count <= need) {
        Drop(DropReason::kQueueFull, front.count);
        queued_ -= front.count;
        entries_.pop_front();
      } else {
        const std::size_t d = T::DropOldest(&front.req, need);
        Drop(DropReason::kQueueFull, d);
        queued_ -= d;
        front.count -= d;
        front.bytes = front.req.ByteSizeLong();
      }
    }
    const std::size_t bytes = req.ByteSizeLong();
    entries_.push_back(Entry{std::move(req), n, bytes});
    queued_ += n;
    wake_.notify_all();
  }

  bool Flush(std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu_);
    wake_.notify_all();
    return idle_.wait_for(lk, timeout, [&] { return queued_ == 0 && in_flight_ == 0; });
  }

  // Stops taking new work: what is queued is still exported until Stop's deadline.
  void BeginStop() {
    std::lock_guard lk(mu_);
    stopping_ = true;
    wake_.notify_all();
  }

  // Exports until `deadline` at most, then drops what is left (reason shutdown) and joins.
  void Stop(Clock::time_point deadline) {
    std::unique_lock lk(mu_);
    if (stopped_) return;
    stopping_ = true;
    wake_.notify_all();
    idle_.wait_until(lk, deadline, [&] { return queued_ == 0 && in_flight_ == 0; });
    abort_ = true;
    if (active_ != nullptr) active_->TryCancel();
    wake_.notify_all();
    lk.unlock();
    thread_.join();
    lk.lock();
    for (const Entry& e : entries_) Drop(DropReason::kShutdown, e.count);
    entries_.clear();
    queued_ = 0;
    stopped_ = true;
    ReportLocked(/*force=*/true);
  }

  SignalStats Stats() const {
    std::lock_guard lk(mu_);
    SignalStats s = stats_;
    s.queued = queued_;
    s.in_flight = in_flight_;
    return s;
  }

 private:
  struct Entry {
    Req req;
    std::size_t count;
    std::size_t bytes;
  };
  struct Outcome {
    std::size_t forwarded = 0;
    std::size_t dropped = 0;
    DropReason reason = DropReason::kNonRetryable;
  };

  void Drop(DropReason reason, std::uint64_t n) {  // requires mu_
    stats_.dropped[static_cast<std::size_t>(reason)] += n;
  }

  void Run() {
    std::unique_lock lk(mu_);
    while (true) {
      wake_.wait(lk, [&] { return abort_ || stopping_ || queued_ > 0; });
      if (abort_ || (stopping_ && queued_ == 0)) break;
      if (!stopping_ && queued_ < max_batch_) {
        // Give a small batch a moment to fill.
        wake_.wait_for(lk, o_.batch_delay,
                       [&] { return abort_ || stopping_ || queued_ >= max_batch_; });
        if (abort_) break;
      }
      Req batch;
      std::size_t n = 0;
      std::size_t bytes = 0;
      while (!entries_.empty()) {
        Entry& e = entries_.front();
        if (n > 0 && (n + e.count > max_batch_ || bytes + e.bytes > o_.max_batch_bytes)) break;
        n += e.count;
        bytes += e.bytes;
        queued_ -= e.count;
        Append(&batch, std::move(e.req));
        entries_.pop_front();
      }
      in_flight_ = n;
      lk.unlock();
      const Outcome out = Send(batch, n);
      lk.lock();
      in_flight_ = 0;
      stats_.forwarded += out.forwarded;
      if (out.dropped > 0) Drop(out.reason, out.dropped);
      ReportLocked(/*force=*/false);
      idle_.notify_all();
    }
    idle_.notify_all();
  }

  // Exports one batch of n items, retrying as the policy says. Called without mu_.
  Outcome Send(const Req& batch, std::size_t n) {
    const auto first = Clock::now();
    for (int attempt = 0;; ++attempt) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + o_.rpc_timeout);
      {
        std::lock_guard lk(mu_);
        if (abort_) return {0, n, DropReason::kShutdown};
        active_ = &ctx;
        if (attempt > 0) ++stats_.retries;
      }
      Response resp;
      const grpc::Status st = channel_->Call(&ctx, batch, &resp);
      std::unique_lock lk(mu_);
      active_ = nullptr;
      if (st.ok()) {
        ++stats_.export_ok;
        const auto rejected = static_cast<std::size_t>(
            std::clamp<std::int64_t>(T::Rejected(resp), 0, static_cast<std::int64_t>(n)));
        if (rejected > 0) {
          last_error_ = fmt::format("collector rejected {} of {} {}: {}", rejected, n, T::kItems,
                                    T::RejectMessage(resp));
        }
        return {n - rejected, rejected, DropReason::kRejectedByCollector};
      }
      ++stats_.export_failed;
      last_error_ = fmt::format("export to {} failed: {} {}", o_.endpoint,
                                CodeName(st.error_code()), st.error_message());
      if (abort_) return {0, n, DropReason::kShutdown};
      if (!Retryable(st.error_code())) return {0, n, DropReason::kNonRetryable};
      const auto delay =
          BackoffDelay(o_.retry, attempt, std::uniform_real_distribution<double>(0.0, 1.0)(rng_));
      if (Clock::now() + delay - first > o_.retry.max_elapsed) {
        return {0, n, DropReason::kRetryExhausted};
      }
      ReportLocked(/*force=*/false);
      if (wake_.wait_for(lk, delay, [&] { return abort_; })) return {0, n, DropReason::kShutdown};
    }
  }

  // Logs new drops and the last error, at most once per kDropReportPeriod. Requires mu_.
  void ReportLocked(bool force) {
    const auto now = Clock::now();
    if (!force && now - last_report_ < kDropReportPeriod) return;
    const std::uint64_t dropped = stats_.DroppedTotal();
    const std::uint64_t failed = stats_.export_failed;
    if (dropped != reported_dropped_ || (failed != reported_failed_ && !force)) {
      std::string by_reason;
      for (std::size_t r = 0; r < kDropReasonCount; ++r) {
        if (stats_.dropped[r] == 0) continue;
        by_reason += fmt::format("{}{}={}", by_reason.empty() ? "" : " ",
                                 DropReasonName(static_cast<DropReason>(r)), stats_.dropped[r]);
      }
      spdlog::warn("OTLP {}: {} {} dropped so far ({}), {} failed export attempts; last: {}",
                   T::kSignal, dropped, T::kItems, by_reason.empty() ? "none" : by_reason, failed,
                   last_error_.empty() ? "-" : last_error_);
    }
    reported_dropped_ = dropped;
    reported_failed_ = failed;
    last_report_ = now;
  }

  const ExporterOptions& o_;
  const std::shared_ptr<Channel> channel_;
  const std::size_t max_queue_;
  const std::size_t max_batch_;

  mutable std::mutex mu_;
  std::condition_variable wake_;           // new work, stop, abort
  std::condition_variable idle_;           // a batch finished
  std::deque<Entry> entries_;              // guarded by mu_
  std::size_t queued_ = 0;                 // items in entries_, by mu_
  std::size_t in_flight_ = 0;              // by mu_
  SignalStats stats_;                      // by mu_ (queued/in_flight filled in by Stats())
  bool stopping_ = false;                  // by mu_: flush, then stop
  bool abort_ = false;                     // by mu_: stop now
  bool stopped_ = false;                   // by mu_
  grpc::ClientContext* active_ = nullptr;  // by mu_: the attempt in progress, to cancel
  std::mt19937_64 rng_;                    // sender thread only
  std::string last_error_;                 // by mu_
  Clock::time_point last_report_;          // by mu_
  std::uint64_t reported_dropped_ = 0;     // by mu_
  std::uint64_t reported_failed_ = 0;      // by mu_
  std::thread thread_;
};

OtlpExporter::OtlpExporter(ExporterOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<OtlpExporter>> OtlpExporter::Create(ExporterOptions o) {
  const auto colon = o.endpoint.rfind(':');
  if (o.endpoint.empty() || colon == std::string::npos || colon == 0 ||
      colon + 1 == o.endpoint.size()) {
    return MakeError("OTLP endpoint '{}' is not host:port", o.endpoint);
  }
  if (o.max_queue_spans == 0 || o.max_batch_spans == 0 || o.max_queue_points == 0 ||
      o.max_batch_points == 0) {
    return MakeError("OTLP exporter: queue and batch sizes must be at least 1");
  }
  if (o.retry.initial_backoff.count() < 0 || o.retry.max_backoff < o.retry.initial_backoff ||
      o.rpc_timeout.count() <= 0 || o.max_reconnect_backoff.count() <= 0) {
    return MakeError("OTLP exporter: backoff and timeout settings out of range");
  }
  InstallGrpcLogging();
  std::unique_ptr<OtlpExporter> e(new OtlpExporter(std::move(o)));
  e->channel_ = std::make_shared<Channel>(e->options_);
  e->spans_ = std::make_unique<Signal<TraceRequest>>(
      e->options_, e->channel_, e->options_.max_queue_spans, e->options_.max_batch_spans);
  e->points_ = std::make_unique<Signal<MetricsRequest>>(
      e->options_, e->channel_, e->options_.max_queue_points, e->options_.max_batch_points);
  spdlog::info("OTLP exporter to {} (queue {} spans, batch {} spans)", e->options_.endpoint,
               e->options_.max_queue_spans, e->options_.max_batch_spans);
  return e;
}

OtlpExporter::~OtlpExporter() { Stop(); }

void OtlpExporter::Enqueue(TraceRequest&& req) { spans_->Enqueue(std::move(req)); }
void OtlpExporter::EnqueueMetrics(MetricsRequest&& req) { points_->Enqueue(std::move(req)); }

bool OtlpExporter::Flush(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const bool spans_done = spans_->Flush(timeout);
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return points_->Flush(std::max(left, std::chrono::milliseconds(0))) && spans_done;
}

void OtlpExporter::Stop() {
  if (!spans_ || !points_) return;
  const auto deadline = Clock::now() + options_.shutdown_flush;
  spans_->BeginStop();
  points_->BeginStop();
  spans_->Stop(deadline);
  points_->Stop(deadline);
}

SignalStats OtlpExporter::SpanStats() const { return spans_->Stats(); }
SignalStats OtlpExporter::PointStats() const { return points_->Stats(); }

}  // namespace isoscope::otlp
