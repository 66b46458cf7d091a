// Span join: bindings and per-span breakdowns on synthetic evidence.
#include <cmath>
#include <map>

#include <gtest/gtest.h>

#include "collectors/source/event_source.hpp"
#include "correlator/span_join.hpp"
#include "testing/event_builder.hpp"

namespace isoscope::correlator {
namespace {

constexpr std::uint64_t kMs = 1000000;

SpanQuery Span(std::uint8_t trace_seed, std::uint8_t parent_seed, std::uint64_t start,
               std::uint64_t end) {
  SpanQuery q;
  for (std::size_t i = 0; i < q.trace_id.size(); ++i) q.trace_id[i] = trace_seed + i;
  for (std::size_t i = 0; i < q.parent_span_id.size(); ++i) q.parent_span_id[i] = parent_seed + i;
  q.start_boot_ns = start;
  q.end_boot_ns = end;
  return q;
}

void Feed(EvidenceStore& store, const std::vector<testing::Bytes>& recs) {
  EvidenceSink sink(store);
  source::SyntheticSource src(recs);
  while (*src.NextInterval(sink)) {
  }
}

TEST(SpanJoin, ThreadBindingGivesThatThreadsBreakdownOverTheSpan) {
  EvidenceStore store;
  Feed(store, {
                  testing::Traceparent(100, 101, 1000 * kMs, 0x10, 0x40),
                  // Thread 101: throttled 1010-1090 ms, runqueue 1100-1110 ms.
                  testing::Delay(100, 101, ISO_CAUSE_CONTAINER_CPU_THROTTLE, 1010 * kMs, 1090 * kMs),
                  testing::Delay(100, 101, ISO_CAUSE_CONTAINER_RUNQUEUE, 1100 * kMs, 1110 * kMs),
                  // Another thread of the same process, throttled too: not this request.
                  testing::Delay(100, 102, ISO_CAUSE_CONTAINER_CPU_THROTTLE, 1000 * kMs, 1200 * kMs),
                  testing::Snapshot(2000 * kMs),
              });
  auto r = store.Join(Span(0x10, 0x40, 1000 * kMs, 1120 * kMs));
  EXPECT_EQ(r.binding, Binding::kThread);
  ASSERT_EQ(r.tids.size(), 1u);
  EXPECT_EQ(r.tids[0], 101u);
  EXPECT_NEAR(r.breakdown.seconds[ISO_CAUSE_CONTAINER_CPU_THROTTLE], 0.080, 1e-9);
  EXPECT_NEAR(r.breakdown.seconds[ISO_CAUSE_CONTAINER_RUNQUEUE], 0.010, 1e-9);
  EXPECT_NEAR(r.breakdown.seconds[ISO_CAUSE_APP_ON_CPU], 0.030, 1e-9);
  EXPECT_NEAR(r.breakdown.thread_seconds, 0.120, 1e-9);
  ASSERT_TRUE(r.verdict.cause);
  EXPECT_EQ(*r.verdict.cause, static_cast<abi::Cause>(ISO_CAUSE_CONTAINER_CPU_THROTTLE));
  EXPECT_NEAR(r.verdict.share, 80.0 / 120.0, 1e-9);
}

TEST(SpanJoin, SegmentsAreClippedToTheSpan) {
  EvidenceStore store;
  Feed(store, {testing::Traceparent(1, 2, 0, 1, 2),
               testing::Delay(1, 2, ISO_CAUSE_CONTAINER_RUNQUEUE, 0, 500 * kMs)});
  auto r = store.Join(Span(1, 2, 400 * kMs, 600 * kMs));
  EXPECT_NEAR(r.breakdown.seconds[ISO_CAUSE_CONTAINER_RUNQUEUE], 0.100, 1e-9);
  EXPECT_NEAR(r.breakdown.seconds[ISO_CAUSE_APP_ON_CPU], 0.100, 1e-9);
}

TEST(SpanJoin, UnknownTraceFallsBackToProcessWithLowerConfidenceOrNone) {
  EvidenceStore store;
  Feed(store, {testing::Delay(7, 70, ISO_CAUSE_CONTAINER_CPU_THROTTLE, 0, 100 * kMs),
               testing::Delay(7, 71, ISO_CAUSE_CONTAINER_CPU_THROTTLE, 0, 100 * kMs)});
  auto none = store.Join(Span(9, 9, 0, 100 * kMs));
  EXPECT_EQ(none.binding, Binding::kNone);
  EXPECT_FALSE(none.verdict.cause);

  auto q = Span(9, 9, 0, 100 * kMs);
  q.resource_pid = 7;
  auto r = store.Join(q);
  EXPECT_EQ(r.binding, Binding::kProcess);
  EXPECT_EQ(r.tids.size(), 2u);
  EXPECT_NEAR(r.breakdown.seconds[ISO_CAUSE_CONTAINER_CPU_THROTTLE], 0.100, 1e-9);
  ASSERT_TRUE(r.verdict.cause);
  EXPECT_NEAR(r.verdict.confidence, 0.5, 1e-9);
}

TEST(SpanJoin, HealthyProcessIsNotBlamedForAThrottledNeighbour) {
  EvidenceStore store;
  Feed(store, {testing::Traceparent(1, 11, 0, 0xa0, 0x01),  // throttled server
               testing::Traceparent(2, 21, 0, 0xb0, 0x01),  // healthy server
               testing::Delay(1, 11, ISO_CAUSE_CONTAINER_CPU_THROTTLE, 0, 90 * kMs)});
  auto healthy = store.Join(Span(0xb0, 0x01, 0, 100 * kMs));
  EXPECT_EQ(healthy.binding, Binding::kThread);
  EXPECT_FALSE(healthy.verdict.cause);
  auto throttled = store.Join(Span(0xa0, 0x01, 0, 100 * kMs));
  ASSERT_TRUE(throttled.verdict.cause);
}

TEST(SpanJoin, EvidenceExpiresAfterTheWindowAndMemoryIsBounded) {
  EvidenceStore::Limits limits;
  limits.window_ns = 1000 * kMs;
  limits.max_segments = 3;
  limits.max_bindings = 1;
  EvidenceStore store(limits);
  Feed(store, {testing::Traceparent(1, 2, 100 * kMs, 1, 1),
               testing::Traceparent(1, 2, 200 * kMs, 2, 2),  // evicts the first binding
               testing::Delay(1, 2, ISO_CAUSE_CONTAINER_RUNQUEUE, 0, 10 * kMs),
               testing::Delay(1, 2, ISO_CAUSE_CONTAINER_RUNQUEUE, 20 * kMs, 30 * kMs),
               testing::Delay(1, 2, ISO_CAUSE_CONTAINER_RUNQUEUE, 40 * kMs, 50 * kMs),
               testing::Delay(1, 2, ISO_CAUSE_CONTAINER_RUNQUEUE, 60 * kMs, 70 * kMs)});
  EXPECT_EQ(store.stats().evicted, 2u);
  EXPECT_EQ(store.Join(Span(1, 1, 0, 100 * kMs)).binding, Binding::kNone);
  auto r = store.Join(Span(2, 2, 0, 100 * kMs));
  EXPECT_EQ(r.binding, Binding::kThread);
  EXPECT_NEAR(r.breakdown.seconds[ISO_CAUSE_CONTAINER_RUNQUEUE], 0.030, 1e-9);

  store.Expire(1100 * kMs);  // cutoff 100 ms: every delay ended before it
  EXPECT_EQ(store.stats().expired, 3u);
  EXPECT_NEAR(store.Join(Span(2, 2, 0, 100 * kMs)).breakdown.seconds[ISO_CAUSE_CONTAINER_RUNQUEUE],
              0.0, 1e-12);
  store.Expire(1300 * kMs);  // the binding at 200 ms goes too
  EXPECT_EQ(store.Join(Span(2, 2, 0, 100 * kMs)).binding, Binding::kNone);
}

}  // namespace
}  // namespace isoscope::correlator

#include "correlator/span_attributes.hpp"

namespace isoscope::correlator {
namespace {

TEST(SpanAttributes, VerdictAndNonZeroCauses) {
  SpanResult r;
  r.binding = Binding::kThread;
  r.tgid = 42;
  r.breakdown.thread_seconds = 0.1;
  r.breakdown.seconds[ISO_CAUSE_CONTAINER_CPU_THROTTLE] = 0.08;
  r.breakdown.seconds[ISO_CAUSE_APP_ON_CPU] = 0.02;
  r.verdict = ComputeVerdict(r.breakdown);
  std::map<std::string, AttributeValue> attrs;
  for (auto& a : SpanAttributes(r)) attrs[a.key] = a.value;
  EXPECT_EQ(std::get<std::string>(attrs.at("isoscope.binding")), "thread");
  EXPECT_EQ(std::get<std::string>(attrs.at("isoscope.verdict.layer")), "container");
  EXPECT_EQ(std::get<std::string>(attrs.at("isoscope.verdict.cause")), "container.cpu_throttle");
  EXPECT_NEAR(std::get<double>(attrs.at("isoscope.verdict.share")), 0.8, 1e-9);
  EXPECT_NEAR(std::get<double>(attrs.at("isoscope.cause.container.cpu_throttle.seconds")), 0.08, 1e-12);
  EXPECT_NEAR(std::get<double>(attrs.at("isoscope.cause.app.on_cpu.seconds")), 0.02, 1e-12);
  EXPECT_FALSE(attrs.count("isoscope.cause.container.runqueue.seconds"));
  EXPECT_EQ(std::get<std::int64_t>(attrs.at("process.pid")), 42);
}

TEST(SpanAttributes, UnboundSpansSayOnlyThat) {
  auto attrs = SpanAttributes(SpanResult{});
  ASSERT_EQ(attrs.size(), 1u);
  EXPECT_EQ(attrs[0].key, "isoscope.binding");
  EXPECT_EQ(std::get<std::string>(attrs[0].value), "none");
}

TEST(ClockMap, MapsRealtimeOntoBoottime) {
  const ClockMap m = ClockMap::Now();
  timespec r{}, b{};
  clock_gettime(CLOCK_REALTIME, &r);
  clock_gettime(CLOCK_BOOTTIME, &b);
  const std::uint64_t unix_ns = r.tv_sec * 1000000000ull + r.tv_nsec;
  const std::uint64_t boot_ns = b.tv_sec * 1000000000ull + b.tv_nsec;
  const double diff = static_cast<double>(m.ToBoot(unix_ns)) - static_cast<double>(boot_ns);
  EXPECT_LT(std::abs(diff), 5e6);  // same instant within 5 ms (a clock mapping, not a timing)
}

}  // namespace
}  // namespace isoscope::correlator

#include <thread>

namespace isoscope::correlator {
namespace {

TEST(SpanJoin, WaitForWatermarkReturnsOnceEvidenceReachesTheSpanEnd) {
  EvidenceStore store;
  store.SetWatermark(100);
  EXPECT_TRUE(store.WaitForWatermark(50, std::chrono::milliseconds(0)));
  EXPECT_FALSE(store.WaitForWatermark(200, std::chrono::milliseconds(1)));
  std::thread drainer([&] { store.SetWatermark(300); });
  EXPECT_TRUE(store.WaitForWatermark(200, std::chrono::seconds(10)));
  drainer.join();
  store.SetWatermark(250);  // never moves back
  EXPECT_TRUE(store.WaitForWatermark(300, std::chrono::milliseconds(0)));
}

}  // namespace
}  // namespace isoscope::correlator
