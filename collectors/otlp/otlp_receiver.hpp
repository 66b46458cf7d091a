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
//
// What happens to a body once it is read (decode, validation, counting, the sink, the response)
// does not depend on the transport: ExportHandler does it for this receiver and for the OTLP/HTTP
// one (otlp_http_receiver.hpp).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "collectors/otlp/otlp_codec.hpp"
#include "common/result.hpp"

namespace grpc {
class ByteBuffer;
class CallbackServerContext;
class Server;
class Status;
}  // namespace grpc

namespace isoscope::otlp {

// Who sent a request.
struct PeerInfo {
  // gRPC peer URI: "ipv4:127.0.0.1:45678", "ipv6:[::1]:45678" or "unix:/path" (the OTLP/HTTP
  // receiver writes the same form). A loopback TCP peer can be mapped to the sending process
  // through its socket (local port -> inode -> pid).
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
  // Larger request messages get RESOURCE_EXHAUSTED from gRPC (the OTLP collector's default); over
  // HTTP, larger bodies (after gzip decompression) get 413.
  std::size_t max_receive_message_bytes = std::size_t{4} << 20;
  // Concurrent requests (HTTP/2 streams) per client connection.
  int max_concurrent_streams = 64;
};

// Cumulative counts since construction.
struct ReceiverStats {
  std::uint64_t trace_requests = 0;   // trace Export calls whose body decoded
  std::uint64_t spans = 0;            // spans in those requests
  std::uint64_t invalid_spans = 0;    // of these, removed for invalid ids
  std::uint64_t metric_requests = 0;  // metrics Export calls whose body decoded
  std::uint64_t metric_points = 0;    // data points in those requests
  // Bodies that did not decode (gRPC INVALID_ARGUMENT, HTTP 400) or that the HTTP receiver
  // refused unread or undecoded (413 too large, 415 media type or encoding), both kinds.
  std::uint64_t invalid_requests = 0;
  std::uint64_t invalid_trace_requests = 0;  // of these, trace requests
  std::uint64_t unrouted_requests = 0;       // HTTP only: another path (404) or method (405)

  ReceiverStats& operator+=(const ReceiverStats& o);
};

// "host:port" with a numeric port in 0..65535 (IPv6 hosts in brackets).
bool ValidListenAddress(const std::string& addr);

// The transport-independent half of an Export call, shared by the gRPC and HTTP receivers:
// decodes the body (DecodeTraceRequest / DecodeMetricsRequest), removes spans with invalid ids,
// counts, hands what is left to the sink and serializes the response. Thread-safe.
class ExportHandler {
 public:
  // `spans` must outlive the handler; `metrics` may be null (HandleMetrics is then not called).
  ExportHandler(SpanSink* spans, MetricSink* metrics) : span_sink_(spans), metric_sink_(metrics) {}

  // The serialized ExportTraceServiceResponse (with partial_success when spans were removed), or
  // why the body is not an ExportTraceServiceRequest (counted as an invalid request).
  Result<std::string> HandleTraces(std::string_view body, const PeerInfo& peer);
  // Same for metrics (ExportMetricsServiceResponse).
  Result<std::string> HandleMetrics(std::string_view body, const PeerInfo& peer);
  // A request refused before its body was decoded (too large, unsupported media type or content
  // encoding): counted as an invalid request of its signal.
  void CountRefused(bool traces);

  [[nodiscard]] bool ServesMetrics() const { return metric_sink_ != nullptr; }
  [[nodiscard]] ReceiverStats Stats() const;

 private:
  SpanSink* const span_sink_;
  MetricSink* const metric_sink_;
  std::atomic<std::uint64_t> trace_requests_{0};
  std::atomic<std::uint64_t> spans_{0};
  std::atomic<std::uint64_t> invalid_spans_{0};
  std::atomic<std::uint64_t> metric_requests_{0};
  std::atomic<std::uint64_t> metric_points_{0};
  std::atomic<std::uint64_t> invalid_requests_{0};
  std::atomic<std::uint64_t> invalid_trace_requests_{0};
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
  [[nodiscard]] ReceiverStats Stats() const { return handler_.Stats(); }

 private:
  class TraceService;
  class MetricsService;

  // One Export call of either service (traces: TraceService, else MetricsService).
  grpc::Status Handle(bool traces, grpc::CallbackServerContext* ctx, const grpc::ByteBuffer& body,
                      grpc::ByteBuffer* response);

  ExportHandler handler_;
  const ReceiverOptions options_;
  std::unique_ptr<TraceService> trace_service_;
  std::unique_ptr<MetricsService> metrics_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
};

}  // namespace isoscope::otlp
