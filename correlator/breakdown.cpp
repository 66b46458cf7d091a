#include "correlator/breakdown.hpp"

#include <algorithm>

namespace isoscope::correlator {

Breakdown& Breakdown::operator+=(const Breakdown& other) {
  interval_s = std::max(interval_s, other.interval_s);
  thread_seconds += other.thread_seconds;
  threads += other.threads;
  for (std::size_t i = 0; i < seconds.size(); ++i) seconds[i] += other.seconds[i];
  return *this;
}

Verdict ComputeVerdict(const Breakdown& b) {
  Verdict v;
  if (b.thread_seconds <= 0) return v;
  std::optional<abi::Cause> top;
  double top_s = 0;
  double second_s = 0;
  for (abi::Cause c = 0; c < ISO_CAUSE_MAX; ++c) {
    if (!abi::Blamable(c) || b.seconds[c] <= 0) continue;
    if (b.seconds[c] > top_s) {
      second_s = top_s;
      top_s = b.seconds[c];
      top = c;
    } else if (b.seconds[c] > second_s) {
      second_s = b.seconds[c];
    }
  }
  const double expected = b.interval_s * b.threads;
  const double coverage = expected > 0 ? std::min(1.0, b.thread_seconds / expected) : 1.0;
  const double top_share = top_s / b.thread_seconds;
  if (top && top_share > kVerdictThreshold) {
    v.cause = top;
    v.share = top_share;
    v.confidence = coverage * (top_s / (top_s + second_s));
  } else {
    v.share = top_share;
    v.confidence = coverage * (1.0 - top_share / kVerdictThreshold / 2.0);
  }
  v.confidence = std::clamp(v.confidence, 0.0, 1.0);
  return v;
}

}  // namespace isoscope::correlator
