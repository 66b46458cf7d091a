// The agent's OTLP path end to end in one process, over real loopback gRPC:
// client -> OtlpPipeline (receiver -> enricher -> exporter) -> test collector, and the
// isoscope_otlp_* Prometheus metrics it registers.
#include "exporters/otlp/otlp_pipeline.hpp"

#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "otlp/test_collector.hpp"

namespace isoscope::otlp {
namespace {

using std::chrono::milliseconds;
using testing::MakePoints;
using testing::MakeSpans;
using testing::SendRaw;
using testing::TestCollector;
using testing::WaitFor;

namespace trace_v1 = opentelemetry::proto::collector::trace::v1;

grpc::Status Export(const std::string& target, const TraceRequest& req) {
  auto stub = trace_v1::TraceService::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  TraceResponse resp;
  return stub->Export(&ctx, req, &resp);
}

PipelineOptions Options(const std::string& endpoint) {
  PipelineOptions o;
  o.listen = "127.0.0.1:0";
  o.exporter.endpoint = endpoint;
  o.exporter.batch_delay = milliseconds(5);
  o.exporter.retry.initial_backoff = milliseconds(10);
  o.exporter.retry.max_backoff = milliseconds(100);
  o.exporter.max_reconnect_backoff = milliseconds(100);
  o.metrics_period = milliseconds(20);
  return o;
}

// The value of one sample in the text exposition ("name{labels} value"), or -1.
double Sample(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return -1;
}

std::string Scrape(prometheus::Registry& r) {
  return prometheus::TextSerializer().Serialize(r.Collect());
}

TEST(OtlpPipeline, ForwardsEnrichedSpansAndExposesMetrics) {
  TestCollector c;
  ASSERT_GT(c.Start(), 0);
  auto p = OtlpPipeline::Create(Options(c.target()));
  ASSERT_TRUE(p.ok()) << p.error().message;
  (*p)->SetEnricher([](TraceRequest& req, const PeerInfo& peer) {
    for (auto& rs : *req.mutable_resource_spans()) {
      auto* a = rs.mutable_resource()->add_attributes();
      a->set_key("isoscope.peer");
      a->mutable_value()->set_string_value(peer.address);
    }
  });
  auto registry = std::make_shared<prometheus::Registry>();
  (*p)->ExposeMetrics(registry);
  ASSERT_TRUE((*p)->Start().ok());
  const std::string target = (*p)->Receiver().Address();

  ASSERT_TRUE(Export(target, MakeSpans(0, 4)).ok());
  TraceRequest with_bad = MakeSpans(4, 3);
  with_bad.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_spans(0)->set_trace_id("x");
  ASSERT_TRUE(Export(target, with_bad).ok());
  EXPECT_EQ(SendRaw(target, kTraceExportMethod, "\x0a\xff").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  ASSERT_TRUE(WaitFor([&] { return c.accepted_span_names().size() == 6; }));
  for (const auto& req : c.accepted_requests()) {
    for (const auto& rs : req.resource_spans()) {
      const auto& attrs = rs.resource().attributes();
      ASSERT_GE(attrs.size(), 2);
      EXPECT_EQ(attrs[attrs.size() - 1].key(), "isoscope.peer");
      EXPECT_EQ(attrs[attrs.size() - 1].value().string_value().rfind("ipv4:127.0.0.1:", 0), 0u);
    }
  }

  ASSERT_TRUE(WaitFor(
      [&] { return Sample(Scrape(*registry), "isoscope_otlp_spans_forwarded_total") == 6; }));
  const std::string text = Scrape(*registry);
  EXPECT_EQ(Sample(text, "isoscope_otlp_spans_received_total"), 7) << text;
  EXPECT_EQ(Sample(text, "isoscope_otlp_spans_dropped_total{reason=\"invalid\"}"), 1) << text;
  EXPECT_EQ(Sample(text, "isoscope_otlp_spans_dropped_total{reason=\"queue_full\"}"), 0) << text;
  EXPECT_EQ(Sample(text, "isoscope_otlp_requests_invalid_total{signal=\"traces\"}"), 1) << text;
  EXPECT_EQ(Sample(text, "isoscope_otlp_requests_total{signal=\"traces\"}"), 2) << text;
  EXPECT_EQ(Sample(text, "isoscope_otlp_queue_spans"), 0) << text;

  (*p)->Stop();
  const auto s = (*p)->Stats();
  EXPECT_EQ(s.spans.received, 7u);
  EXPECT_EQ(s.spans.forwarded, 6u);
  EXPECT_TRUE(s.spans.Balanced());
}

TEST(OtlpPipeline, WithoutEndpointCountsSpansAsDropped) {
  PipelineOptions o = Options("");
  auto p = OtlpPipeline::Create(o);
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE((*p)->HasExporter());
  int enriched = 0;
  (*p)->SetEnricher([&](TraceRequest&) { ++enriched; });  // the single-argument form
  ASSERT_TRUE((*p)->Start().ok());
  ASSERT_TRUE(Export((*p)->Receiver().Address(), MakeSpans(0, 5)).ok());
  auto stub = opentelemetry::proto::collector::metrics::v1::MetricsService::NewStub(
      grpc::CreateChannel((*p)->Receiver().Address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  MetricsResponse resp;
  ASSERT_TRUE(stub->Export(&ctx, MakePoints(0, 2), &resp).ok());
  EXPECT_EQ(enriched, 1);
  const auto s = (*p)->Stats();
  EXPECT_EQ(s.spans.received, 5u);
  EXPECT_EQ(s.spans.DroppedBy(DropReason::kNoEndpoint), 5u);
  EXPECT_TRUE(s.spans.Balanced());
  EXPECT_EQ(s.points.DroppedBy(DropReason::kNoEndpoint), 2u);
  EXPECT_TRUE(s.points.Balanced());
}

TEST(OtlpPipeline, ForwardsMetrics) {
  TestCollector c;
  ASSERT_GT(c.Start(), 0);
  auto p = OtlpPipeline::Create(Options(c.target()));
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE((*p)->Start().ok());
  auto stub = opentelemetry::proto::collector::metrics::v1::MetricsService::NewStub(
      grpc::CreateChannel((*p)->Receiver().Address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  MetricsResponse resp;
  ASSERT_TRUE(stub->Export(&ctx, MakePoints(0, 3), &resp).ok());
  ASSERT_TRUE(WaitFor([&] { return c.accepted_points() == 3; }));
  (*p)->Stop();
  EXPECT_EQ((*p)->Stats().points.forwarded, 3u);
}

TEST(OtlpPipeline, CreateFailsOnABadEndpoint) {
  auto p = OtlpPipeline::Create(Options("no-port"));
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message.find("no-port"), std::string::npos) << p.error().message;
}

TEST(OtlpPipeline, StartFailsOnABusyPort) {
  auto first = OtlpPipeline::Create(Options(""));
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE((*first)->Start().ok());
  PipelineOptions o = Options("");
  o.listen = (*first)->Receiver().Address();
  auto second = OtlpPipeline::Create(o);
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE((*second)->Start().ok());
}

}  // namespace
}  // namespace isoscope::otlp
