// The OTLP/gRPC receiver over real loopback gRPC: valid requests reach the sink with the peer's
// address; bodies that do not decode get INVALID_ARGUMENT and the server keeps serving;
// oversized messages get RESOURCE_EXHAUSTED; invalid span ids come back as partial success.
#include "collectors/otlp/otlp_receiver.hpp"

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "otlp/test_collector.hpp"

namespace isoscope::otlp {
namespace {

using testing::MakePoints;
using testing::MakeSpans;
using testing::RecordingSink;
using testing::SendRaw;
using testing::SpanNames;

namespace trace_v1 = opentelemetry::proto::collector::trace::v1;
namespace metrics_v1 = opentelemetry::proto::collector::metrics::v1;

grpc::Status Export(const std::string& target, const TraceRequest& req, TraceResponse* resp) {
  auto stub = trace_v1::TraceService::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  return stub->Export(&ctx, req, resp);
}

class OtlpReceiverTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(ReceiverOptions{}); }
  void Start(ReceiverOptions o) {
    receiver_ = std::make_unique<OtlpReceiver>(&sink_, &sink_, o);
    auto st = receiver_->Start("127.0.0.1:0");
    ASSERT_TRUE(st.ok()) << st.error().message;
    ASSERT_GT(receiver_->Port(), 0);
    target_ = receiver_->Address();
  }
  RecordingSink sink_;
  std::unique_ptr<OtlpReceiver> receiver_;
  std::string target_;
};

TEST_F(OtlpReceiverTest, ValidRequestReachesSinkWithPeer) {
  TraceResponse resp;
  auto st = Export(target_, MakeSpans(0, 3), &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_FALSE(resp.has_partial_success());
  ASSERT_EQ(sink_.calls, 1);
  EXPECT_EQ(sink_.names, (std::vector<std::string>{"span-0", "span-1", "span-2"}));
  EXPECT_EQ(sink_.peers[0].address.rfind("ipv4:127.0.0.1:", 0), 0u) << sink_.peers[0].address;
  EXPECT_NE(sink_.peers[0].user_agent.find("grpc-c++"), std::string::npos)
      << sink_.peers[0].user_agent;
  const auto s = receiver_->Stats();
  EXPECT_EQ(s.trace_requests, 1u);
  EXPECT_EQ(s.spans, 3u);
  EXPECT_EQ(s.invalid_requests, 0u);
}

TEST_F(OtlpReceiverTest, MalformedBodyGetsInvalidArgumentAndServerKeepsServing) {
  auto st = SendRaw(target_, kTraceExportMethod, "\xff\xff\xff\xff garbage");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_NE(st.error_message().find("not a valid protobuf message"), std::string::npos);

  const std::string full = MakeSpans(0, 4).SerializeAsString();
  st = SendRaw(target_, kTraceExportMethod, full.substr(0, full.size() / 2));  // truncated
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  st = SendRaw(target_, kMetricsExportMethod, "\x0a\x05\x01");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  TraceResponse resp;
  st = Export(target_, MakeSpans(10, 2), &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(sink_.names, (std::vector<std::string>{"span-10", "span-11"}));
  const auto s = receiver_->Stats();
  EXPECT_EQ(s.invalid_requests, 3u);
  EXPECT_EQ(s.invalid_trace_requests, 2u);
  EXPECT_EQ(s.trace_requests, 1u);
  EXPECT_EQ(s.spans, 2u);
}

TEST_F(OtlpReceiverTest, RawValidBodyIsAccepted) {
  grpc::ByteBuffer resp;
  auto st = SendRaw(target_, kTraceExportMethod, MakeSpans(0, 1).SerializeAsString(), &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(sink_.names.size(), 1u);
}

TEST_F(OtlpReceiverTest, OversizedMessageIsRefusedAndServerKeepsServing) {
  ReceiverOptions o;
  o.max_receive_message_bytes = 64 * 1024;
  receiver_.reset();
  Start(o);
  TraceRequest big = MakeSpans(0, 1);
  auto* attr =
      big.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_spans(0)->add_attributes();
  attr->set_key("blob");
  attr->mutable_value()->set_string_value(std::string(100 * 1024, 'x'));
  TraceResponse resp;
  auto st = Export(target_, big, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_EQ(sink_.calls, 0);

  st = Export(target_, MakeSpans(0, 1), &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(sink_.calls, 1);
}

TEST_F(OtlpReceiverTest, InvalidSpanIdsComeBackAsPartialSuccess) {
  TraceRequest req = MakeSpans(0, 4);
  req.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_spans(1)->set_span_id("");
  TraceResponse resp;
  auto st = Export(target_, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_TRUE(resp.has_partial_success());
  EXPECT_EQ(resp.partial_success().rejected_spans(), 1);
  EXPECT_NE(resp.partial_success().error_message().find("span_id is not 8 bytes"),
            std::string::npos);
  EXPECT_EQ(sink_.names, (std::vector<std::string>{"span-0", "span-2", "span-3"}));

  // A request whose spans are all invalid does not reach the sink.
  TraceRequest all_bad = MakeSpans(0, 1);
  all_bad.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_spans(0)->set_trace_id("");
  ASSERT_TRUE(Export(target_, all_bad, &resp).ok());
  EXPECT_EQ(resp.partial_success().rejected_spans(), 1);
  EXPECT_EQ(sink_.calls, 1);
  const auto s = receiver_->Stats();
  EXPECT_EQ(s.spans, 5u);
  EXPECT_EQ(s.invalid_spans, 2u);
}

TEST_F(OtlpReceiverTest, MetricsAreAcceptedAndCounted) {
  auto stub = metrics_v1::MetricsService::NewStub(
      grpc::CreateChannel(target_, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  MetricsResponse resp;
  auto st = stub->Export(&ctx, MakePoints(0, 5), &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(sink_.points, 5u);
  EXPECT_EQ(receiver_->Stats().metric_points, 5u);
  EXPECT_EQ(receiver_->Stats().metric_requests, 1u);
}

TEST(OtlpReceiver, WithoutMetricSinkMetricsAreUnimplemented) {
  RecordingSink sink;
  OtlpReceiver r(&sink);
  ASSERT_TRUE(r.Start("127.0.0.1:0").ok());
  auto st = SendRaw(r.Address(), kMetricsExportMethod, MakePoints(0, 1).SerializeAsString());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST(OtlpReceiver, RefusesAPortInUseAndBadAddresses) {
  RecordingSink sink;
  OtlpReceiver first(&sink);
  ASSERT_TRUE(first.Start("127.0.0.1:0").ok());
  OtlpReceiver second(&sink);
  auto st = second.Start(first.Address());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find(first.Address()), std::string::npos) << st.error().message;
  EXPECT_FALSE(second.Start("no-port").ok());
  EXPECT_FALSE(second.Start("127.0.0.1:99999").ok());
  EXPECT_FALSE(second.Start("127.0.0.1:").ok());
  // The first one is unaffected.
  TraceResponse resp;
  EXPECT_TRUE(Export(first.Address(), MakeSpans(0, 1), &resp).ok());
  EXPECT_FALSE(first.Start("127.0.0.1:0").ok());  // already listening
}

TEST_F(OtlpReceiverTest, ConcurrentClients) {
  constexpr int kClients = 8;
  constexpr int kRequests = 25;
  std::atomic<int> failures{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kRequests; ++i) {
        TraceResponse resp;
        if (!Export(target_, MakeSpans(static_cast<std::uint64_t>(c * 1000 + i * 2), 2), &resp)
                 .ok()) {
          ++failures;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(sink_.names.size(), static_cast<std::size_t>(kClients * kRequests * 2));
  EXPECT_EQ(receiver_->Stats().spans, static_cast<std::uint64_t>(kClients * kRequests * 2));
}

TEST_F(OtlpReceiverTest, StopIsIdempotentAndRefusesAfterwards) {
  const std::string target = target_;
  receiver_->Stop();
  receiver_->Stop();
  TraceResponse resp;
  auto stub = trace_v1::TraceService::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  EXPECT_EQ(stub->Export(&ctx, MakeSpans(0, 1), &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace isoscope::otlp
