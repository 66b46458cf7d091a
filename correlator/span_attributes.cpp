#include "correlator/span_attributes.hpp"

#include <ctime>

namespace isoscope::correlator {
namespace {

std::int64_t ClockNs(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace

ClockMap ClockMap::Now() {
  // Bracket the realtime read with two boottime reads to halve the error.
  const std::int64_t b1 = ClockNs(CLOCK_BOOTTIME);
  const std::int64_t r = ClockNs(CLOCK_REALTIME);
  const std::int64_t b2 = ClockNs(CLOCK_BOOTTIME);
  return ClockMap{r - (b1 + (b2 - b1) / 2)};
}

std::vector<Attribute> SpanAttributes(const SpanResult& r) {
  std::vector<Attribute> out;
  out.push_back({"isoscope.binding", std::string(BindingName(r.binding))});
  if (r.binding == Binding::kNone) return out;
  if (r.verdict.cause) {
    out.push_back({"isoscope.verdict.layer",
                   std::string(abi::LayerName(abi::CauseLayer(*r.verdict.cause)))});
    out.push_back({"isoscope.verdict.cause", std::string(abi::CauseName(*r.verdict.cause))});
  } else {
    out.push_back({"isoscope.verdict.layer", std::string("none")});
    out.push_back({"isoscope.verdict.cause", std::string("none")});
  }
  out.push_back({"isoscope.verdict.share", r.verdict.share});
  out.push_back({"isoscope.verdict.confidence", r.verdict.confidence});
  for (abi::Cause c = 0; c < ISO_CAUSE_MAX; ++c) {
    if (r.breakdown.seconds[c] <= 0) continue;
    out.push_back({"isoscope.cause." + std::string(abi::CauseName(c)) + ".seconds",
                   r.breakdown.seconds[c]});
  }
  if (r.tgid != 0) out.push_back({"process.pid", static_cast<std::int64_t>(r.tgid)});
  return out;
}

}  // namespace isoscope::correlator
