// OTLP/HTTP receiver (binary protobuf): serves POST /v1/traces (and POST /v1/metrics when a
// metric sink is given) on a TCP address with civetweb, so that applications whose SDK defaults
// to http/protobuf (port 4318) can send their spans to isoscope (docs/otlp.md).
//
// A body is decoded, validated, counted and handed to the sink by the same ExportHandler as the
// gRPC receiver's (otlp_receiver.hpp): the two transports behave alike and count in the same
// ReceiverStats fields. Answers:
//
//   200  application/x-protobuf, Export*ServiceResponse (partial_success for invalid span ids)
//   400  body does not decode (or a gzip body that does not inflate): a google.rpc.Status
//        message (code INVALID_ARGUMENT, the reason) in protobuf
//   413  body, or its gzip decompression, larger than max_receive_message_bytes
//   415  Content-Type other than application/x-protobuf (OTLP/JSON is not supported), or a
//        Content-Encoding other than gzip/identity
//   404  another path (or /v1/metrics without a metric sink); 405 another method than POST
//
// 400, 413 and 415 count as invalid requests of their signal; 404 and 405 as unrouted requests.
// Error bodies other than 400's are text/plain. The server keeps serving after every error.
//
// The sinks are called on civetweb's worker threads, concurrently; they must be thread-safe and
// quick (the pipeline only enqueues).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "collectors/otlp/otlp_receiver.hpp"
#include "common/result.hpp"

struct mg_connection;
struct mg_context;

namespace isoscope::otlp {

class OtlpHttpReceiver {
 public:
  // Worker threads, i.e. requests served at once.
  static constexpr int kThreads = 8;

  // `spans` must outlive the receiver; `metrics` may be null: then /v1/metrics answers 404.
  explicit OtlpHttpReceiver(SpanSink* spans, MetricSink* metrics = nullptr,
                            ReceiverOptions options = {});
  ~OtlpHttpReceiver();
  OtlpHttpReceiver(const OtlpHttpReceiver&) = delete;
  OtlpHttpReceiver& operator=(const OtlpHttpReceiver&) = delete;

  // Listens on "host:port" with a numeric host (IPv6 as "[::1]:4318"; port 0 picks a free one).
  // Fails when the address is malformed or cannot be bound (also when another process holds the
  // port), or when already started.
  Status Start(const std::string& addr);
  // Stops accepting and waits for the requests in progress. Idempotent.
  void Stop();

  [[nodiscard]] int Port() const { return port_; }  // 0 before Start
  // "host:port" actually bound.
  [[nodiscard]] const std::string& Address() const { return address_; }
  [[nodiscard]] ReceiverStats Stats() const;

 private:
  static int OnRequest(mg_connection* conn, void* self);
  int Serve(mg_connection* conn);

  ExportHandler handler_;
  const ReceiverOptions options_;
  mg_context* ctx_ = nullptr;
  int port_ = 0;
  std::string address_;
  std::atomic<std::uint64_t> unrouted_{0};
};

}  // namespace isoscope::otlp
