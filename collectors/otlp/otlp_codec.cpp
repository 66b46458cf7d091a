#include "collectors/otlp/otlp_codec.hpp"

#include <algorithm>
#include <climits>

#include <google/protobuf/io/coded_stream.h>

namespace isoscope::otlp {
namespace {

bool AllZero(std::string_view bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
}

template <typename Message>
Status Parse(std::string_view bytes, Message* out, std::string_view what) {
  out->Clear();
  if (bytes.size() > static_cast<std::size_t>(INT_MAX)) {
    return MakeError("{}: {} bytes is too large to decode", what, bytes.size());
  }
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  in.SetRecursionLimit(kMaxNestingDepth);
  if (!out->MergeFromCodedStream(&in) || !in.ConsumedEntireMessage()) {
    return MakeError(
        "{}: {} bytes are not a valid protobuf message (malformed field, nesting deeper than {}, "
        "or invalid UTF-8 in a string)",
        what, bytes.size(), kMaxNestingDepth);
  }
  return {};
}

std::size_t PointsOf(const opentelemetry::proto::metrics::v1::Metric& m) {
  using M = opentelemetry::proto::metrics::v1::Metric;
  switch (m.data_case()) {
    case M::kGauge:
      return static_cast<std::size_t>(m.gauge().data_points_size());
    case M::kSum:
      return static_cast<std::size_t>(m.sum().data_points_size());
    case M::kHistogram:
      return static_cast<std::size_t>(m.histogram().data_points_size());
    case M::kExponentialHistogram:
      return static_cast<std::size_t>(m.exponential_histogram().data_points_size());
    case M::kSummary:
      return static_cast<std::size_t>(m.summary().data_points_size());
    case M::DATA_NOT_SET:
      break;
  }
  return 0;
}

}  // namespace

std::string_view SpanIdProblem(const Span& span) {
  if (span.trace_id().size() != 16) return "trace_id is not 16 bytes";
  if (AllZero(span.trace_id())) return "trace_id is all zero";
  if (span.span_id().size() != 8) return "span_id is not 8 bytes";
  if (AllZero(span.span_id())) return "span_id is all zero";
  if (!span.parent_span_id().empty() && span.parent_span_id().size() != 8) {
    return "parent_span_id is neither empty nor 8 bytes";
  }
  return {};
}

Result<TraceDecodeReport> DecodeTraceRequest(std::string_view bytes, TraceRequest* out) {
  if (auto st = Parse(bytes, out, "ExportTraceServiceRequest"); !st) return st.error();
  TraceDecodeReport report;
  for (auto& rs : *out->mutable_resource_spans()) {
    for (auto& ss : *rs.mutable_scope_spans()) {
      auto* spans = ss.mutable_spans();
      report.spans += static_cast<std::size_t>(spans->size());
      // Compact in place, keeping order.
      int kept = 0;
      for (int i = 0; i < spans->size(); ++i) {
        const std::string_view problem = SpanIdProblem(spans->Get(i));
        if (!problem.empty()) {
          if (report.invalid_spans++ == 0) report.invalid_reason = std::string(problem);
          continue;
        }
        if (kept != i) spans->SwapElements(kept, i);
        ++kept;
      }
      if (kept < spans->size()) spans->DeleteSubrange(kept, spans->size() - kept);
    }
  }
  return report;
}

Result<std::size_t> DecodeMetricsRequest(std::string_view bytes, MetricsRequest* out) {
  if (auto st = Parse(bytes, out, "ExportMetricsServiceRequest"); !st) return st.error();
  return CountDataPoints(*out);
}

std::size_t CountSpans(const TraceRequest& req) {
  std::size_t n = 0;
  for (const auto& rs : req.resource_spans()) {
    for (const auto& ss : rs.scope_spans()) n += static_cast<std::size_t>(ss.spans_size());
  }
  return n;
}

std::size_t CountDataPoints(const opentelemetry::proto::metrics::v1::Metric& metric) {
  return PointsOf(metric);
}

std::size_t CountDataPoints(const MetricsRequest& req) {
  std::size_t n = 0;
  for (const auto& rm : req.resource_metrics()) {
    for (const auto& sm : rm.scope_metrics()) {
      for (const auto& m : sm.metrics()) n += PointsOf(m);
    }
  }
  return n;
}

std::size_t DropOldestSpans(TraceRequest* req, std::size_t n) {
  std::size_t removed = 0;
  for (auto& rs : *req->mutable_resource_spans()) {
    for (auto& ss : *rs.mutable_scope_spans()) {
      if (removed == n) break;
      const auto take =
          std::min<std::size_t>(n - removed, static_cast<std::size_t>(ss.spans_size()));
      ss.mutable_spans()->DeleteSubrange(0, static_cast<int>(take));
      removed += take;
    }
    if (removed == n) break;
  }
  // Drop the entries left empty.
  auto* rss = req->mutable_resource_spans();
  for (auto& rs : *rss) {
    auto* sss = rs.mutable_scope_spans();
    sss->erase(std::remove_if(sss->begin(), sss->end(),
                              [](const auto& ss) { return ss.spans_size() == 0; }),
               sss->end());
  }
  rss->erase(std::remove_if(rss->begin(), rss->end(),
                            [](const auto& rs) { return rs.scope_spans_size() == 0; }),
             rss->end());
  return removed;
}

std::size_t DropOldestMetrics(MetricsRequest* req, std::size_t n) {
  std::size_t removed = 0;
  for (auto& rm : *req->mutable_resource_metrics()) {
    for (auto& sm : *rm.mutable_scope_metrics()) {
      auto* metrics = sm.mutable_metrics();
      int whole = 0;
      while (whole < metrics->size() && removed < n) removed += PointsOf(metrics->Get(whole++));
      metrics->DeleteSubrange(0, whole);
      if (removed >= n) break;
    }
    if (removed >= n) break;
  }
  auto* rms = req->mutable_resource_metrics();
  for (auto& rm : *rms) {
    auto* sms = rm.mutable_scope_metrics();
    sms->erase(std::remove_if(sms->begin(), sms->end(),
                              [](const auto& sm) { return sm.metrics_size() == 0; }),
               sms->end());
  }
  rms->erase(std::remove_if(rms->begin(), rms->end(),
                            [](const auto& rm) { return rm.scope_metrics_size() == 0; }),
             rms->end());
  return removed;
}

void Append(TraceRequest* dst, TraceRequest&& src) {
  auto* to = dst->mutable_resource_spans();
  to->Reserve(to->size() + src.resource_spans_size());
  for (auto& rs : *src.mutable_resource_spans()) *dst->add_resource_spans() = std::move(rs);
  src.Clear();
}

void Append(MetricsRequest* dst, MetricsRequest&& src) {
  for (auto& rm : *src.mutable_resource_metrics()) *dst->add_resource_metrics() = std::move(rm);
  src.Clear();
}

std::string Hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xf]);
  }
  return out;
}

}  // namespace isoscope::otlp
