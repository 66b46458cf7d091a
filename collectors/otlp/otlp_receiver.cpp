#include "collectors/otlp/otlp_receiver.hpp"

#include <chrono>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>
#include <spdlog/spdlog.h>

#include "collectors/otlp/grpc_log.hpp"
#include "opentelemetry/proto/collector/metrics/v1/metrics_service.grpc.pb.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"

namespace isoscope::otlp {
namespace {

namespace trace_v1 = opentelemetry::proto::collector::trace::v1;
namespace metrics_v1 = opentelemetry::proto::collector::metrics::v1;

// The body as one contiguous view; `hold` keeps the bytes alive.
std::string_view Flatten(const grpc::ByteBuffer& body, grpc::Slice* hold) {
  if (!body.TrySingleSlice(hold).ok() && !body.DumpToSingleSlice(hold).ok()) return {};
  return {reinterpret_cast<const char*>(hold->begin()), hold->size()};
}

PeerInfo PeerOf(grpc::CallbackServerContext* ctx) {
  PeerInfo peer;
  peer.address = ctx->peer();
  const auto& md = ctx->client_metadata();
  if (auto it = md.find("user-agent"); it != md.end()) {
    peer.user_agent.assign(it->second.data(), it->second.size());
  }
  return peer;
}

}  // namespace

bool ValidListenAddress(const std::string& addr) {
  const auto colon = addr.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == addr.size()) return false;
  const std::string_view port(addr.data() + colon + 1, addr.size() - colon - 1);
  if (port.size() > 5) return false;
  unsigned value = 0;
  for (const char c : port) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value <= 65535;
}

ReceiverStats& ReceiverStats::operator+=(const ReceiverStats& o) {
  trace_requests += o.trace_requests;
  spans += o.spans;
  invalid_spans += o.invalid_spans;
  metric_requests += o.metric_requests;
  metric_points += o.metric_points;
  invalid_requests += o.invalid_requests;
  invalid_trace_requests += o.invalid_trace_requests;
  unrouted_requests += o.unrouted_requests;
  return *this;
}

Result<std::string> ExportHandler::HandleTraces(std::string_view body, const PeerInfo& peer) {
  TraceRequest req;
  auto decoded = DecodeTraceRequest(body, &req);
  if (!decoded) {
    CountRefused(true);
    return decoded.error();
  }
  const TraceDecodeReport& report = *decoded;
  trace_requests_.fetch_add(1, std::memory_order_relaxed);
  spans_.fetch_add(report.spans, std::memory_order_relaxed);
  invalid_spans_.fetch_add(report.invalid_spans, std::memory_order_relaxed);
  if (report.spans > report.invalid_spans) span_sink_->OnExport(std::move(req), peer);

  TraceResponse resp;
  if (report.invalid_spans > 0) {
    auto* partial = resp.mutable_partial_success();
    partial->set_rejected_spans(static_cast<std::int64_t>(report.invalid_spans));
    partial->set_error_message(fmt::format("{} of {} spans rejected for invalid ids (first: {})",
                                           report.invalid_spans, report.spans,
                                           report.invalid_reason));
  }
  return resp.SerializeAsString();
}

Result<std::string> ExportHandler::HandleMetrics(std::string_view body, const PeerInfo& peer) {
  MetricsRequest req;
  auto points = DecodeMetricsRequest(body, &req);
  if (!points) {
    CountRefused(false);
    return points.error();
  }
  metric_requests_.fetch_add(1, std::memory_order_relaxed);
  metric_points_.fetch_add(*points, std::memory_order_relaxed);
  if (*points > 0) metric_sink_->OnExportMetrics(std::move(req), peer);
  return MetricsResponse{}.SerializeAsString();
}

void ExportHandler::CountRefused(bool traces) {
  invalid_requests_.fetch_add(1, std::memory_order_relaxed);
  if (traces) invalid_trace_requests_.fetch_add(1, std::memory_order_relaxed);
}

ReceiverStats ExportHandler::Stats() const {
  ReceiverStats s;
  s.trace_requests = trace_requests_.load(std::memory_order_relaxed);
  s.spans = spans_.load(std::memory_order_relaxed);
  s.invalid_spans = invalid_spans_.load(std::memory_order_relaxed);
  s.metric_requests = metric_requests_.load(std::memory_order_relaxed);
  s.metric_points = metric_points_.load(std::memory_order_relaxed);
  s.invalid_requests = invalid_requests_.load(std::memory_order_relaxed);
  s.invalid_trace_requests = invalid_trace_requests_.load(std::memory_order_relaxed);
  return s;
}

class OtlpReceiver::TraceService final
    : public trace_v1::TraceService::WithRawCallbackMethod_Export<trace_v1::TraceService::Service> {
 public:
  explicit TraceService(OtlpReceiver* owner) : owner_(owner) {}
  grpc::ServerUnaryReactor* Export(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* body,
                                   grpc::ByteBuffer* response) override {
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(owner_->Handle(true, ctx, *body, response));
    return reactor;
  }

 private:
  OtlpReceiver* const owner_;
};

class OtlpReceiver::MetricsService final
    : public metrics_v1::MetricsService::WithRawCallbackMethod_Export<
          metrics_v1::MetricsService::Service> {
 public:
  explicit MetricsService(OtlpReceiver* owner) : owner_(owner) {}
  grpc::ServerUnaryReactor* Export(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* body,
                                   grpc::ByteBuffer* response) override {
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(owner_->Handle(false, ctx, *body, response));
    return reactor;
  }

 private:
  OtlpReceiver* const owner_;
};

OtlpReceiver::OtlpReceiver(SpanSink* spans, MetricSink* metrics, ReceiverOptions options)
    : handler_(spans, metrics), options_(options) {}

OtlpReceiver::~OtlpReceiver() { Stop(); }

Status OtlpReceiver::Start(const std::string& addr) {
  if (server_) return MakeError("OTLP receiver already listening on {}", address_);
  if (!ValidListenAddress(addr)) {
    return MakeError("OTLP listen address '{}' is not host:port", addr);
  }
  if (options_.max_receive_message_bytes == 0 ||
      options_.max_receive_message_bytes > static_cast<std::size_t>(INT32_MAX) ||
      options_.max_concurrent_streams < 1) {
    return MakeError("OTLP receiver limits out of range (max message {} bytes, {} streams)",
                     options_.max_receive_message_bytes, options_.max_concurrent_streams);
  }
  InstallGrpcLogging();
  trace_service_ = std::make_unique<TraceService>(this);
  if (handler_.ServesMetrics()) metrics_service_ = std::make_unique<MetricsService>(this);

  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(addr, grpc::InsecureServerCredentials(), &bound_port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options_.max_receive_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options_.max_concurrent_streams);
  // gRPC shares ports (SO_REUSEPORT) by default: a second agent would silently split the traffic.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(trace_service_.get());
  if (metrics_service_) builder.RegisterService(metrics_service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || bound_port == 0) {
    if (server_) server_->Shutdown();
    server_.reset();
    trace_service_.reset();
    metrics_service_.reset();
    return MakeError("OTLP receiver cannot listen on {} (address in use or not local?)", addr);
  }
  port_ = bound_port;
  address_ = addr.substr(0, addr.rfind(':')) + ":" + std::to_string(bound_port);
  spdlog::info("OTLP receiver listening on {} (max message {} bytes, {} streams per connection)",
               address_, options_.max_receive_message_bytes, options_.max_concurrent_streams);
  return {};
}

void OtlpReceiver::Stop() {
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_->Wait();
  server_.reset();
  spdlog::info("OTLP receiver on {} stopped", address_);
}

grpc::Status OtlpReceiver::Handle(bool traces, grpc::CallbackServerContext* ctx,
                                  const grpc::ByteBuffer& body, grpc::ByteBuffer* response) {
  grpc::Slice hold;
  const std::string_view bytes = Flatten(body, &hold);
  auto resp = traces ? handler_.HandleTraces(bytes, PeerOf(ctx))
                     : handler_.HandleMetrics(bytes, PeerOf(ctx));
  if (!resp) return {grpc::StatusCode::INVALID_ARGUMENT, resp.error().message};
  grpc::Slice slice(*resp);
  *response = grpc::ByteBuffer(&slice, 1);
  return grpc::Status::OK;
}

}  // namespace isoscope::otlp
