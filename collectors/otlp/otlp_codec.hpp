// OTLP messages as isoscope handles them: decoding request bytes (the one decode path shared by
// the gRPC receiver and the fuzz target, tests/fuzz/), span id validation, counting, and the
// queue operations the exporter needs (append requests, drop the oldest spans).
//
// The message classes are generated from collectors/otlp/proto (written from the OTLP spec and
// checked field by field against independent implementations by tests/otlp/check_protos.js).
// Fields this version does not model are kept by protobuf as unknown fields and forwarded as
// received.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "opentelemetry/proto/collector/metrics/v1/metrics_service.pb.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb.h"

namespace isoscope::otlp {

using TraceRequest = opentelemetry::proto::collector::trace::v1::ExportTraceServiceRequest;
using TraceResponse = opentelemetry::proto::collector::trace::v1::ExportTraceServiceResponse;
using MetricsRequest = opentelemetry::proto::collector::metrics::v1::ExportMetricsServiceRequest;
using MetricsResponse = opentelemetry::proto::collector::metrics::v1::ExportMetricsServiceResponse;
using Span = opentelemetry::proto::trace::v1::Span;

inline constexpr std::string_view kTraceExportMethod =
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
inline constexpr std::string_view kMetricsExportMethod =
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

// Deepest message nesting accepted (AnyValue kvlists and arrays nest); deeper input is rejected
// as malformed instead of recursing further.
inline constexpr int kMaxNestingDepth = 64;

struct TraceDecodeReport {
  std::size_t spans = 0;          // spans in the request as received
  std::size_t invalid_spans = 0;  // of these, removed because their ids are invalid
  std::string invalid_reason;     // the first problem found, for partial_success.error_message
};

// Parses `bytes` into *out (cleared first) and removes the spans whose ids are invalid
// (SpanIdProblem), reporting how many. Fails, with *out unspecified, only when the bytes are not
// an ExportTraceServiceRequest: malformed protobuf (truncated, bad lengths, field number 0, wire
// types 6/7), nesting deeper than kMaxNestingDepth, or invalid UTF-8 in a string field. A known
// field number with an unexpected wire type is well-formed protobuf and is kept as an unknown
// field, as every protobuf implementation does.
Result<TraceDecodeReport> DecodeTraceRequest(std::string_view bytes, TraceRequest* out);
// Same for metrics; returns the number of data points (no per-point validation).
Result<std::size_t> DecodeMetricsRequest(std::string_view bytes, MetricsRequest* out);

// Empty when the span's ids are usable, else why not: trace_id must be 16 bytes and span_id 8
// bytes, neither all zero; parent_span_id must be empty (a root span) or 8 bytes.
std::string_view SpanIdProblem(const Span& span);

std::size_t CountSpans(const TraceRequest& req);
std::size_t CountDataPoints(const MetricsRequest& req);
std::size_t CountDataPoints(const opentelemetry::proto::metrics::v1::Metric& metric);

// Removes the first `n` spans in request order (resource by resource, scope by scope) and the
// resource and scope entries left without spans. Returns how many spans went (min(n, total)).
std::size_t DropOldestSpans(TraceRequest* req, std::size_t n);
// Removes whole metrics from the front until at least `n` data points went or none are left;
// returns the data points removed (may exceed n by the rest of the last metric removed).
std::size_t DropOldestMetrics(MetricsRequest* req, std::size_t n);

// Moves every resource entry of `src` to the end of `dst`.
void Append(TraceRequest* dst, TraceRequest&& src);
void Append(MetricsRequest* dst, MetricsRequest&& src);

// Lowercase hex of a byte string (trace and span ids in logs and tests).
std::string Hex(std::string_view bytes);

}  // namespace isoscope::otlp
