// OTLP decoding, validation, counting and the queue operations (collectors/otlp/otlp_codec.hpp),
// plus the exporter's backoff schedule.
#include "collectors/otlp/otlp_codec.hpp"

#include <string>

#include <gtest/gtest.h>

#include "exporters/otlp/otlp_exporter.hpp"
#include "otlp/test_collector.hpp"

namespace isoscope::otlp {
namespace {

using testing::MakePoints;
using testing::MakeSpans;
using testing::SpanNames;

TEST(OtlpCodec, DecodesValidRequest) {
  const TraceRequest sent = MakeSpans(0, 3);
  TraceRequest got;
  auto r = DecodeTraceRequest(sent.SerializeAsString(), &got);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->spans, 3u);
  EXPECT_EQ(r->invalid_spans, 0u);
  EXPECT_EQ(got.SerializeAsString(), sent.SerializeAsString());
}

TEST(OtlpCodec, EmptyBodyIsAnEmptyRequest) {
  TraceRequest got;
  auto r = DecodeTraceRequest("", &got);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->spans, 0u);
}

TEST(OtlpCodec, RejectsMalformedBytes) {
  TraceRequest got;
  EXPECT_FALSE(DecodeTraceRequest("\xff\xff\xff\xff not protobuf", &got).ok());
  // Truncated: a length prefix longer than what follows.
  const std::string full = MakeSpans(0, 5).SerializeAsString();
  EXPECT_FALSE(DecodeTraceRequest(full.substr(0, full.size() - 7), &got).ok());
  // Field number 0 and wire type 7 do not exist.
  EXPECT_FALSE(DecodeTraceRequest(std::string("\x00\x01", 2), &got).ok());
  EXPECT_FALSE(DecodeTraceRequest(std::string("\x0f\x01", 2), &got).ok());
  // A known field with another wire type is well-formed protobuf: kept as an unknown field.
  auto r = DecodeTraceRequest(std::string("\x08\x01", 2), &got);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->spans, 0u);
  // Invalid UTF-8 in a string field (span name).
  TraceRequest bad = MakeSpans(0, 1);
  bad.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_spans(0)->set_name("ok");
  std::string bytes = bad.SerializeAsString();
  const auto at = bytes.find("ok");
  ASSERT_NE(at, std::string::npos);
  bytes[at] = '\xc3';
  bytes[at + 1] = '\x28';
  EXPECT_FALSE(DecodeTraceRequest(bytes, &got).ok());
}

// kvlist values nested `depth` levels deep as one attribute of one span.
std::string NestedRequest(int depth) {
  TraceRequest req = MakeSpans(0, 1);
  auto* v =
      req.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_spans(0)->add_attributes();
  v->set_key("nested");
  auto* value = v->mutable_value();
  for (int i = 0; i < depth; ++i) {
    auto* kv = value->mutable_kvlist_value()->add_values();
    kv->set_key("k");
    value = kv->mutable_value();
  }
  value->set_string_value("leaf");
  return req.SerializeAsString();
}

TEST(OtlpCodec, BoundsNesting) {
  TraceRequest got;
  EXPECT_TRUE(DecodeTraceRequest(NestedRequest(10), &got).ok());
  EXPECT_FALSE(DecodeTraceRequest(NestedRequest(kMaxNestingDepth), &got).ok());
}

TEST(OtlpCodec, RemovesSpansWithInvalidIds) {
  TraceRequest req = MakeSpans(0, 5);
  auto* spans = req.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_spans();
  spans->Mutable(0)->set_trace_id("short");
  spans->Mutable(2)->set_span_id(std::string(8, '\0'));
  spans->Mutable(3)->set_parent_span_id("1234");
  TraceRequest got;
  auto r = DecodeTraceRequest(req.SerializeAsString(), &got);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->spans, 5u);
  EXPECT_EQ(r->invalid_spans, 3u);
  EXPECT_EQ(r->invalid_reason, "trace_id is not 16 bytes");
  EXPECT_EQ(SpanNames(got), (std::vector<std::string>{"span-1", "span-4"}));
}

TEST(OtlpCodec, SpanIdProblems) {
  Span s = MakeSpans(0, 1).resource_spans(0).scope_spans(0).spans(0);
  EXPECT_EQ(SpanIdProblem(s), "");
  s.set_parent_span_id(testing::SpanIdOf(9));
  EXPECT_EQ(SpanIdProblem(s), "");
  Span t = s;
  t.set_trace_id(std::string(16, '\0'));
  EXPECT_EQ(SpanIdProblem(t), "trace_id is all zero");
  t = s;
  t.set_span_id("1234567");
  EXPECT_EQ(SpanIdProblem(t), "span_id is not 8 bytes");
  t = s;
  t.set_parent_span_id("123456789");
  EXPECT_EQ(SpanIdProblem(t), "parent_span_id is neither empty nor 8 bytes");
}

TEST(OtlpCodec, KeepsUnknownFields) {
  // A span carrying a field number this version does not know (as a newer spec might add):
  // protobuf keeps it, so a forwarded request still carries it.
  std::string bytes = MakeSpans(0, 1).SerializeAsString();
  TraceRequest got;
  ASSERT_TRUE(DecodeTraceRequest(bytes, &got).ok());
  auto* span = got.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_spans(0);
  span->GetReflection()->MutableUnknownFields(span)->AddVarint(99, 7);
  TraceRequest again;
  ASSERT_TRUE(DecodeTraceRequest(got.SerializeAsString(), &again).ok());
  const auto& unknown =
      again.resource_spans(0).scope_spans(0).spans(0).GetReflection()->GetUnknownFields(
          again.resource_spans(0).scope_spans(0).spans(0));
  ASSERT_EQ(unknown.field_count(), 1);
  EXPECT_EQ(unknown.field(0).number(), 99);
  EXPECT_EQ(unknown.field(0).varint(), 7u);
}

TEST(OtlpCodec, DropOldestSpansAcrossResources) {
  TraceRequest req = MakeSpans(0, 3, "a");
  Append(&req, MakeSpans(3, 4, "b"));
  ASSERT_EQ(CountSpans(req), 7u);
  EXPECT_EQ(DropOldestSpans(&req, 0), 0u);
  EXPECT_EQ(DropOldestSpans(&req, 4), 4u);
  EXPECT_EQ(SpanNames(req), (std::vector<std::string>{"span-4", "span-5", "span-6"}));
  EXPECT_EQ(req.resource_spans_size(), 1);  // resource "a" left empty and removed
  EXPECT_EQ(DropOldestSpans(&req, 10), 3u);
  EXPECT_EQ(req.resource_spans_size(), 0);
}

TEST(OtlpCodec, CountsAndDropsDataPoints) {
  MetricsRequest req = MakePoints(0, 4);
  auto* sm = req.mutable_resource_metrics(0)->mutable_scope_metrics(0);
  auto* hist = sm->add_metrics();
  hist->set_name("h");
  hist->mutable_histogram()->add_data_points();
  hist->mutable_histogram()->add_data_points();
  sm->add_metrics()->mutable_exponential_histogram()->add_data_points();
  sm->add_metrics()->mutable_summary()->add_data_points();
  sm->add_metrics()->mutable_sum()->add_data_points();
  sm->add_metrics()->set_name("no data");
  EXPECT_EQ(CountDataPoints(req), 4u + 2 + 1 + 1 + 1);

  MetricsRequest got;
  auto points = DecodeMetricsRequest(req.SerializeAsString(), &got);
  ASSERT_TRUE(points.ok());
  EXPECT_EQ(*points, 9u);

  // Whole metrics go: dropping 5 removes 4 gauges and the 2-point histogram.
  EXPECT_EQ(DropOldestMetrics(&got, 5), 6u);
  EXPECT_EQ(CountDataPoints(got), 3u);
  EXPECT_EQ(DropOldestMetrics(&got, 100), 3u);
  EXPECT_EQ(got.resource_metrics_size(), 0);
}

TEST(OtlpCodec, Hex) { EXPECT_EQ(Hex(std::string("\x00\xab\x10\xff", 4)), "00ab10ff"); }

TEST(OtlpBackoff, GrowsExponentiallyWithinJitterAndCap) {
  RetryPolicy p;
  p.initial_backoff = std::chrono::milliseconds(100);
  p.max_backoff = std::chrono::milliseconds(1000);
  p.multiplier = 2.0;
  p.jitter = 0.2;
  // Middle of the jitter range: the plain schedule.
  EXPECT_EQ(BackoffDelay(p, 0, 0.5).count(), 100);
  EXPECT_EQ(BackoffDelay(p, 1, 0.5).count(), 200);
  EXPECT_EQ(BackoffDelay(p, 3, 0.5).count(), 800);
  EXPECT_EQ(BackoffDelay(p, 4, 0.5).count(), 1000);    // capped
  EXPECT_EQ(BackoffDelay(p, 400, 0.5).count(), 1000);  // no overflow
  // Jitter bounds.
  EXPECT_EQ(BackoffDelay(p, 1, 0.0).count(), 160);
  EXPECT_EQ(BackoffDelay(p, 1, 0.999999).count(), 239);
  EXPECT_EQ(BackoffDelay(p, 10, 0.999999).count(), 1000);  // the cap holds after jitter
  EXPECT_EQ(BackoffDelay(p, 10, 0.0).count(), 800);
}

}  // namespace
}  // namespace isoscope::otlp
