// libFuzzer target over the OTLP receiver's decode path (collectors/otlp/otlp_codec.hpp): the bytes
// of a gRPC request body go through DecodeTraceRequest and DecodeMetricsRequest exactly as the
// receiver would pass them. Besides the sanitizers (ASan, UBSan), it checks the properties the
// receiver and exporter rely on, and traps when one fails:
//   - a decoded trace request holds only spans with valid ids, and spans - invalid of them;
//   - re-encoding a decoded request and decoding it again gives the same spans, none invalid;
//   - DropOldestSpans / DropOldestMetrics remove what they report and the counts add up.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <google/protobuf/stubs/logging.h>

#include "collectors/otlp/otlp_codec.hpp"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

void Quiet(google::protobuf::LogLevel, const char*, int, const std::string&) {}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace isoscope::otlp;
  static const bool kInit = [] {
    google::protobuf::SetLogHandler(&Quiet);  // parse complaints are expected here
    return true;
  }();
  (void)kInit;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  TraceRequest req;
  if (auto r = DecodeTraceRequest(bytes, &req)) {
    const std::size_t n = CountSpans(req);
    Check(r->invalid_spans <= r->spans);
    Check(n == r->spans - r->invalid_spans);
    Check((r->invalid_spans == 0) == r->invalid_reason.empty());
    for (const auto& rs : req.resource_spans()) {
      for (const auto& ss : rs.scope_spans()) {
        for (const auto& span : ss.spans()) Check(SpanIdProblem(span).empty());
      }
    }
    const std::string again = req.SerializeAsString();
    TraceRequest req2;
    auto r2 = DecodeTraceRequest(again, &req2);
    Check(r2.ok());
    Check(r2->spans == n && r2->invalid_spans == 0);

    const std::size_t k = n / 2;
    Check(DropOldestSpans(&req, k) == k);
    Check(CountSpans(req) == n - k);
    TraceRequest merged;
    Append(&merged, std::move(req2));
    Append(&merged, std::move(req));
    Check(CountSpans(merged) == n + (n - k));
  }

  MetricsRequest metrics;
  if (auto points = DecodeMetricsRequest(bytes, &metrics)) {
    Check(*points == CountDataPoints(metrics));
    const std::size_t k = *points / 2;
    const std::size_t dropped = DropOldestMetrics(&metrics, k);
    Check(dropped >= k && dropped <= *points);
    Check(CountDataPoints(metrics) == *points - dropped);
  }
  return 0;
}
