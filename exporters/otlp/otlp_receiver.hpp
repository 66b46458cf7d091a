// OTLP/gRPC receiver: serves opentelemetry.proto.collector.trace.v1.TraceService/Export (and
// MetricsService/Export when a metric sink is given) on a TCP address, so that instrumented
// applications on the node send their spans to isoscope (docs/otlp.md).
//
// Request bodies are decoded by isoscope itself (raw gRPC method, DecodeTraceRequest), not by
// gRPC's generated parser, so that every body that does not decode is answered with
// INVALID_ARGUMENT and counted; the server keeps serving. Spans with invalid ids are removed and
// reported back to the client in partial_success. A message larger than
// max_receive_message_bytes is refused by gRPC with RESOURCE_EXHAUSTED before it is read.
//
// The sinks are called on gRPC's threads, concurrently for concurrent requests; they must be
// thread-safe and must not block for long (the pipeline only enqueues).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "exporters/otlp/otlp_codec.hpp"
#include "util/result.hpp"

namespace grpc {
class ByteBuffer;
class CallbackServerContext;
class Server;
class Status;
}  // namespace grpc

namespace isoscope::otlp {

// Who sent a request.
struct PeerInfo {
  // gRPC peer URI: "ipv4:127.0.0.1:45678", "ipv6:[::1]:45678" or "unix:/path". A loopback TCP
  // peer can be mapped to the sending process through its socket (local port -> inode -> pid).
  std::string address;
  std::string user_agent;  // the client's user-agent metadata, may be empty
};

class SpanSink {
 public:
  virtual ~SpanSink() = default;
  // One decoded request holding at least one span, all with valid ids (SpanIdProblem).
  virtual void OnExport(TraceRequest&& req, const PeerInfo& peer) = 0;
};

class MetricSink {
 public:
  virtual ~MetricSink() = default;
  // One decoded request holding at least one data point.
  virtual void OnExportMetrics(MetricsRequest&& req, const PeerInfo& peer) = 0;
};

struct ReceiverOptions {
  // Larger request messages get RESOURCE_EXHAUSTED from gRPC (the OTLP collector's default).
  std::size_t max_receive_message_bytes = std::size_t{4} << 20;
  // Concurrent requests (HTTP/2 streams) per client connection.
  int max_concurrent_streams = 64;
};

// Cumulative counts since construction.
struct ReceiverStats {
  std::uint64_t trace_requests = 0;    // trace Export calls whose body decoded
  std::uint64_t spans = 0;             // spans in those requests
  std::uint64_t invalid_spans = 0;     // of these, removed for invalid ids
  std::uint64_t metric_requests = 0;   // metrics Export calls whose body decoded
  std::uint64_t metric_points = 0;     // data points in those requests
  std::uint64_t invalid_requests = 0;  // bodies that did not decode (INVALID_ARGUMENT), both kinds
  std::uint64_t invalid_trace_requests = 0;  // of these, trace requests
};

class OtlpReceiver {
 public:
  // `spans` must outlive the receiver; `metrics` may be null: then MetricsService is not served
  // (clients get UNIMPLEMENTED).
  explicit OtlpReceiver(SpanSink* spans, MetricSink* metrics = nullptr,
                        ReceiverOptions options = {});
  ~OtlpReceiver();
  OtlpReceiver(const OtlpReceiver&) = delete;
  OtlpReceiver& operator=(const OtlpReceiver&) = delete;

  // Listens on "host:port" (IPv6 as "[::1]:4317"; port 0 picks a free one). Fails when the
  // address is malformed or cannot be bound (also when another process holds the port: port
  // sharing is switched off), or when already started.
  Status Start(const std::string& addr);
  // Stops accepting, lets requests in progress finish (bounded), and returns. Idempotent.
  void Stop();

  [[nodiscard]] int Port() const { return port_; }  // 0 before Start
  // "host:port" actually bound.
  [[nodiscard]] const std::string& Address() const { return address_; }
  [[nodiscard]] ReceiverStats Stats() const;

 private:
  class TraceService;
  class MetricsService;

  grpc::Status HandleTraces(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer& body,
                            grpc::ByteBuffer* response);
  grpc::Status HandleMetrics(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer& body,
                             grpc::ByteBuffer* response);

  SpanSink* const span_sink_;
  MetricSink* const metric_sink_;
  const ReceiverOptions options_;
  std::unique_ptr<TraceService> trace_service_;
  std::unique_ptr<MetricsService> metrics_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;

  std::atomic<std::uint64_t> trace_requests_{0};
  std::atomic<std::uint64_t> spans_{0};
  std::atomic<std::uint64_t> invalid_spans_{0};
  std::atomic<std::uint64_t> metric_requests_{0};
  std::atomic<std::uint64_t> metric_points_{0};
  std::atomic<std::uint64_t> invalid_requests_{0};
  std::atomic<std::uint64_t> invalid_trace_requests_{0};
};

}  // namespace isoscope::otlp
