// What isoscope adds to a span: the attribute set (docs/otlp-correlation.md)
// and the mapping of span timestamps (Unix epoch ns) onto the kernel's boot
// clock, both free of any protobuf type.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "correlator/span_join.hpp"

namespace isoscope::correlator {

// Offset between CLOCK_REALTIME and CLOCK_BOOTTIME, sampled once per batch.
// Spans carry epoch time from the application's clock, the kernel evidence
// boot time; both are the node's clocks, so no cross-host skew applies.
struct ClockMap {
  std::int64_t real_minus_boot_ns = 0;
  static ClockMap Now();
  std::uint64_t ToBoot(std::uint64_t unix_ns) const {
    const std::int64_t boot = static_cast<std::int64_t>(unix_ns) - real_minus_boot_ns;
    return boot > 0 ? static_cast<std::uint64_t>(boot) : 0;
  }
};

using AttributeValue = std::variant<std::string, double, std::int64_t>;
struct Attribute {
  std::string key;
  AttributeValue value;
};

// isoscope.binding, isoscope.verdict.{layer,cause,share,confidence} and
// isoscope.cause.<cause>.seconds for every cause with time (the app causes
// included: they complete the picture; the verdict never names them).
std::vector<Attribute> SpanAttributes(const SpanResult& result);

}  // namespace isoscope::correlator
