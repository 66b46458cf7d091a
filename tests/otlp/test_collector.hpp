// Test helpers for the OTLP unit tests (tests/unit/otlp_*_test.cpp): a real in-process OTLP/gRPC
// collector on loopback whose answers a test scripts, a raw-bytes client, and request builders.
// Nothing here is a mock: every call crosses a real gRPC connection.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <chrono>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "collectors/otlp/otlp_codec.hpp"
#include "collectors/otlp/otlp_receiver.hpp"
#include "opentelemetry/proto/collector/metrics/v1/metrics_service.grpc.pb.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"

namespace isoscope::otlp::testing {

// A free TCP port on 127.0.0.1 right now (bound, then released).
inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) ::close(fd);
    return 0;
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

// 16-byte trace id and 8-byte span id derived from a number (never all zero).
inline std::string TraceIdOf(std::uint64_t i) {
  std::string id(16, '\0');
  for (int b = 0; b < 8; ++b) id[8 + b] = static_cast<char>((i + 1) >> (8 * (7 - b)));
  id[0] = '\x42';
  return id;
}
inline std::string SpanIdOf(std::uint64_t i) {
  std::string id(8, '\0');
  for (int b = 0; b < 8; ++b) id[b] = static_cast<char>((i + 1) >> (8 * (7 - b)));
  id[0] |= '\x10';
  return id;
}

// One resource ("service.name" = service), one scope, spans named "span-<first>".."span-<last>".
inline TraceRequest MakeSpans(std::uint64_t first, std::size_t count,
                              const std::string& service = "test-service") {
  TraceRequest req;
  auto* rs = req.add_resource_spans();
  auto* attr = rs->mutable_resource()->add_attributes();
  attr->set_key("service.name");
  attr->mutable_value()->set_string_value(service);
  auto* ss = rs->add_scope_spans();
  ss->mutable_scope()->set_name("isoscope-unit-test");
  for (std::uint64_t i = first; i < first + count; ++i) {
    auto* s = ss->add_spans();
    s->set_trace_id(TraceIdOf(i));
    s->set_span_id(SpanIdOf(i));
    s->set_name(fmt::format("span-{}", i));
    s->set_kind(opentelemetry::proto::trace::v1::Span::SPAN_KIND_SERVER);
    s->set_start_time_unix_nano(1'700'000'000'000'000'000ULL + i);
    s->set_end_time_unix_nano(1'700'000'000'000'000'000ULL + i + 1000);
  }
  return req;
}

// One gauge metric per point, named "metric-<i>".
inline MetricsRequest MakePoints(std::uint64_t first, std::size_t count) {
  MetricsRequest req;
  auto* sm = req.add_resource_metrics()->add_scope_metrics();
  for (std::uint64_t i = first; i < first + count; ++i) {
    auto* m = sm->add_metrics();
    m->set_name(fmt::format("metric-{}", i));
    auto* p = m->mutable_gauge()->add_data_points();
    p->set_time_unix_nano(1'700'000'000'000'000'000ULL + i);
    p->set_as_int(static_cast<std::int64_t>(i));
  }
  return req;
}

inline std::vector<std::string> SpanNames(const TraceRequest& req) {
  std::vector<std::string> names;
  for (const auto& rs : req.resource_spans()) {
    for (const auto& ss : rs.scope_spans()) {
      for (const auto& s : ss.spans()) names.push_back(s.name());
    }
  }
  return names;
}

// A receiver's sink that records the span names, peers and data points it was given.
class RecordingSink final : public SpanSink, public MetricSink {
 public:
  void OnExport(TraceRequest&& req, const PeerInfo& peer) override {
    std::lock_guard lk(mu_);
    for (auto& n : SpanNames(req)) names.push_back(std::move(n));
    peers.push_back(peer);
    ++calls;
  }
  void OnExportMetrics(MetricsRequest&& req, const PeerInfo& peer) override {
    std::lock_guard lk(mu_);
    points += CountDataPoints(req);
    peers.push_back(peer);
  }
  std::mutex mu_;
  std::vector<std::string> names;
  std::vector<PeerInfo> peers;
  std::size_t points = 0;
  int calls = 0;
};

// Sends raw bytes as the body of a unary call to `method` and returns the status.
inline grpc::Status SendRaw(const std::string& target, std::string_view method,
                            const std::string& bytes, grpc::ByteBuffer* response = nullptr) {
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  grpc::Slice slice(bytes);
  grpc::ByteBuffer req(&slice, 1);
  grpc::ByteBuffer resp;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, std::string(method), grpc::StubOptions(), &req, &resp,
                 [&](grpc::Status s) { done.set_value(std::move(s)); });
  auto status = done.get_future().get();
  if (response != nullptr) *response = resp;
  return status;
}

// A real OTLP/gRPC collector on 127.0.0.1. Answers follow a script (Plan*), then succeed.
class TestCollector {
 public:
  struct Answer {
    grpc::StatusCode code = grpc::StatusCode::OK;
    std::int64_t rejected = 0;  // with OK: partial_success.rejected_spans / _data_points
  };

  ~TestCollector() { Stop(); }

  // Listens on 127.0.0.1:port (0: a free port); returns the port, 0 on failure.
  int Start(int port = 0) {
    grpc::ServerBuilder b;
    int bound = 0;
    b.AddListeningPort(fmt::format("127.0.0.1:{}", port), grpc::InsecureServerCredentials(),
                       &bound);
    b.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    b.RegisterService(&traces_);
    b.RegisterService(&metrics_);
    server_ = b.BuildAndStart();
    port_ = server_ ? bound : 0;
    return port_;
  }
  void Stop() {
    if (!server_) return;
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_->Wait();
    server_.reset();
  }
  std::string target() const { return fmt::format("127.0.0.1:{}", port_); }
  int port() const { return port_; }

  void PlanTraces(std::vector<Answer> answers) {
    std::lock_guard lk(mu_);
    trace_plan_.assign(answers.begin(), answers.end());
  }
  void PlanMetrics(std::vector<Answer> answers) {
    std::lock_guard lk(mu_);
    metric_plan_.assign(answers.begin(), answers.end());
  }

  // Every Export call, accepted or not.
  int trace_calls() const {
    std::lock_guard lk(mu_);
    return trace_calls_;
  }
  int metric_calls() const {
    std::lock_guard lk(mu_);
    return metric_calls_;
  }
  // Span names of the requests answered OK, in arrival order (rejected ones included: the
  // collector decides what it rejects, the exporter only counts).
  std::vector<std::string> accepted_span_names() const {
    std::lock_guard lk(mu_);
    return accepted_names_;
  }
  std::vector<TraceRequest> accepted_requests() const {
    std::lock_guard lk(mu_);
    return accepted_requests_;
  }
  std::size_t accepted_points() const {
    std::lock_guard lk(mu_);
    return accepted_points_;
  }

 private:
  Answer Next(std::deque<Answer>& plan) {
    if (plan.empty()) return {};
    Answer a = plan.front();
    plan.pop_front();
    return a;
  }

  class Traces final : public opentelemetry::proto::collector::trace::v1::TraceService::Service {
   public:
    explicit Traces(TestCollector* c) : c_(c) {}
    grpc::Status Export(grpc::ServerContext*, const TraceRequest* req,
                        TraceResponse* resp) override {
      std::lock_guard lk(c_->mu_);
      ++c_->trace_calls_;
      const Answer a = c_->Next(c_->trace_plan_);
      if (a.code != grpc::StatusCode::OK) return {a.code, "scripted failure"};
      for (auto& n : SpanNames(*req)) c_->accepted_names_.push_back(std::move(n));
      c_->accepted_requests_.push_back(*req);
      if (a.rejected != 0) {
        resp->mutable_partial_success()->set_rejected_spans(a.rejected);
        resp->mutable_partial_success()->set_error_message("scripted rejection");
      }
      return grpc::Status::OK;
    }

   private:
    TestCollector* c_;
  };

  class Metrics final
      : public opentelemetry::proto::collector::metrics::v1::MetricsService::Service {
   public:
    explicit Metrics(TestCollector* c) : c_(c) {}
    grpc::Status Export(grpc::ServerContext*, const MetricsRequest* req,
                        MetricsResponse* resp) override {
      std::lock_guard lk(c_->mu_);
      ++c_->metric_calls_;
      const Answer a = c_->Next(c_->metric_plan_);
      if (a.code != grpc::StatusCode::OK) return {a.code, "scripted failure"};
      c_->accepted_points_ += CountDataPoints(*req);
      if (a.rejected != 0) resp->mutable_partial_success()->set_rejected_data_points(a.rejected);
      return grpc::Status::OK;
    }

   private:
    TestCollector* c_;
  };

  mutable std::mutex mu_;
  std::deque<Answer> trace_plan_;
  std::deque<Answer> metric_plan_;
  int trace_calls_ = 0;
  int metric_calls_ = 0;
  std::vector<std::string> accepted_names_;
  std::vector<TraceRequest> accepted_requests_;
  std::size_t accepted_points_ = 0;
  Traces traces_{this};
  Metrics metrics_{this};
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

// Polls `pred` every 5 ms for up to `timeout`; true when it held. For waiting on asynchronous
// progress, never for asserting durations.
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

}  // namespace isoscope::otlp::testing
