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

namespace isoscope::correlator {
namespace {

testing::Bytes Outbound(std::uint32_t tgid, std::uint32_t tid, std::uint64_t ts, std::uint8_t trace,
                        std::uint8_t own_span) {
  auto bytes = testing::Traceparent(tgid, tid, ts, trace, own_span);
  reinterpret_cast<iso_rec_traceparent*>(bytes.data())->flags |= ISO_TP_F_OUTBOUND;
  reinterpret_cast<iso_rec_traceparent*>(bytes.data())->sport = 40000;
  return bytes;
}

SpanQuery ClientSpan(std::uint8_t trace_seed, std::uint8_t span_seed, std::uint64_t start,
                     std::uint64_t end) {
  SpanQuery q = Span(trace_seed, 0, start, end);
  q.parent_span_id = {};
  for (std::size_t i = 0; i < q.span_id.size(); ++i) q.span_id[i] = span_seed + i;
  q.outbound = true;
  return q;
}

constexpr abi::Cause kPodQueue = abi::NetworkCause(ISO_SLICE_POD, ISO_NET_QUEUE);
constexpr abi::Cause kPodProtocol = abi::NetworkCause(ISO_SLICE_POD, ISO_NET_PROTOCOL);

TEST(SpanJoinNetwork, ClientSpanBindsThroughTheOutboundRequestCarryingItsOwnId) {
  EvidenceStore store;
  // The client thread 201 wrote a request carrying span 0x70, then slept
  // waiting for the answer from 10 to 110 ms.
  Feed(store, {Outbound(200, 201, 1 * kMs, 0x20, 0x70),
               testing::Delay(200, 201, ISO_CAUSE_APP_BLOCKED_OTHER, 10 * kMs, 110 * kMs)});
  // An inbound lookup with the same ids must not match an outbound record.
  EXPECT_EQ(store.Join(Span(0x20, 0x70, 0, 120 * kMs)).binding, Binding::kNone);

  std::vector<SocketTuple> asked;
  NetLookup net = [&](const SocketTuple& s, std::uint64_t a, std::uint64_t b) {
    asked.push_back(s);
    EXPECT_EQ(a, 0u);
    EXPECT_EQ(b, 120 * kMs);
    // Queued 20-80 ms; a retransmission wait 60-100 ms overlaps and wins.
    return std::vector<NetPiece>{{20 * kMs, 80 * kMs, kPodQueue}, {60 * kMs, 100 * kMs, kPodProtocol}};
  };
  auto r = store.Join(ClientSpan(0x20, 0x70, 0, 120 * kMs), net);
  ASSERT_EQ(r.binding, Binding::kThread);
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0].local_port, 40000);
  ASSERT_TRUE(r.socket);
  EXPECT_NEAR(r.breakdown.seconds[kPodQueue], 0.040, 1e-9);
  EXPECT_NEAR(r.breakdown.seconds[kPodProtocol], 0.040, 1e-9);
  // Blocked 10-110 minus the 80 ms taken by the network; on-CPU 0-10, 110-120.
  EXPECT_NEAR(r.breakdown.seconds[ISO_CAUSE_APP_BLOCKED_OTHER], 0.020, 1e-9);
  EXPECT_NEAR(r.breakdown.seconds[ISO_CAUSE_APP_ON_CPU], 0.020, 1e-9);
  double total = 0;
  for (double s : r.breakdown.seconds) total += s;
  EXPECT_NEAR(total, 0.120, 1e-9);  // one partition of the span
  ASSERT_TRUE(r.verdict.cause);
  EXPECT_EQ(abi::CauseLayer(*r.verdict.cause), abi::Layer::kNetwork);
}

TEST(SpanJoinNetwork, TheIsolationStackKeepsItsTimeOverWaitingData) {
  EvidenceStore store;
  // Server thread throttled 0-70 ms while its request's data waited 0-90 ms.
  Feed(store, {testing::Traceparent(300, 301, 0, 0x30, 0x31),
               testing::Delay(300, 301, ISO_CAUSE_CONTAINER_CPU_THROTTLE, 0, 70 * kMs)});
  NetLookup net = [](const SocketTuple&, std::uint64_t, std::uint64_t) {
    return std::vector<NetPiece>{{0, 90 * kMs, kPodQueue}};
  };
  auto r = store.Join(Span(0x30, 0x31, 0, 100 * kMs), net);
  EXPECT_NEAR(r.breakdown.seconds[ISO_CAUSE_CONTAINER_CPU_THROTTLE], 0.070, 1e-9);
  EXPECT_NEAR(r.breakdown.seconds[kPodQueue], 0.020, 1e-9);
  EXPECT_NEAR(r.breakdown.seconds[ISO_CAUSE_APP_ON_CPU], 0.010, 1e-9);
  ASSERT_TRUE(r.verdict.cause);
  EXPECT_EQ(*r.verdict.cause, static_cast<abi::Cause>(ISO_CAUSE_CONTAINER_CPU_THROTTLE));
}

TEST(SpanJoinNetwork, ContainerAndPeerCandidatesBindWithTheirOwnNameAndLowerConfidence) {
  EvidenceStore store;
  auto throttled = testing::Delay(400, 401, ISO_CAUSE_CONTAINER_CPU_THROTTLE, 0, 50 * kMs);
  reinterpret_cast<iso_rec_hdr*>(throttled.data())->cgroup_v2_id = 77;
  Feed(store, {throttled, testing::Delay(500, 501, ISO_CAUSE_APP_BLOCKED_IO, 0, 5 * kMs)});
  auto tgids = store.ProcessesWhere([](std::uint64_t v2, std::uint64_t) { return v2 == 77; });
  ASSERT_EQ(tgids, std::vector<std::uint32_t>{400});
  SpanQuery q = Span(0x40, 0x41, 0, 100 * kMs);
  q.candidate_tgids = tgids;
  q.candidate_binding = Binding::kContainer;
  auto r = store.Join(q);
  EXPECT_EQ(r.binding, Binding::kContainer);
  EXPECT_EQ(BindingName(r.binding), "container");
  EXPECT_EQ(r.tgid, 400u);
  EXPECT_EQ(r.cgroup_v2_id, 77u);
  EXPECT_NEAR(r.breakdown.seconds[ISO_CAUSE_CONTAINER_CPU_THROTTLE], 0.050, 1e-9);
  EXPECT_LE(r.verdict.confidence, 0.5);
  // process.pid outranks the candidates.
  q.resource_pid = 500;
  EXPECT_EQ(store.Join(q).binding, Binding::kProcess);
  EXPECT_EQ(store.Join(q).tgid, 500u);
  q.resource_pid = 999;  // unknown pid: fall through to the candidates
  q.candidate_binding = Binding::kPeer;
  EXPECT_EQ(store.Join(q).binding, Binding::kPeer);
}

}  // namespace
}  // namespace isoscope::correlator

namespace isoscope::correlator {
namespace {

TEST(SpanJoinNetwork, ServerSpanAlsoGetsTheNetworkTimeOfItsOwnOutboundCalls) {
  EvidenceStore store;
  // Server thread 601 read request (trace 0x60, parent 0x61) at 0, called a
  // downstream service at 10 ms (its CLIENT span 0x62) and waited 10-90 ms.
  auto call = testing::Traceparent(600, 601, 10 * kMs, 0x60, 0x62);
  reinterpret_cast<iso_rec_traceparent*>(call.data())->flags |= ISO_TP_F_OUTBOUND;
  reinterpret_cast<iso_rec_traceparent*>(call.data())->sport = 50000;
  // A call of another trace in the same window must not count.
  auto other = testing::Traceparent(600, 601, 12 * kMs, 0x70, 0x63);
  reinterpret_cast<iso_rec_traceparent*>(other.data())->flags |= ISO_TP_F_OUTBOUND;
  reinterpret_cast<iso_rec_traceparent*>(other.data())->sport = 50001;
  Feed(store, {testing::Traceparent(600, 601, 0, 0x60, 0x61), call, other,
               testing::Delay(600, 601, ISO_CAUSE_APP_BLOCKED_OTHER, 10 * kMs, 90 * kMs)});
  const abi::Cause remote = abi::NetworkCause(ISO_SLICE_REMOTE, ISO_NET_PROTOCOL);
  std::vector<std::uint16_t> ports;
  NetLookup net = [&](const SocketTuple& s, std::uint64_t, std::uint64_t) {
    ports.push_back(s.local_port);
    if (s.local_port == 50000) return std::vector<NetPiece>{{20 * kMs, 70 * kMs, remote}};
    if (s.local_port == 50001) return std::vector<NetPiece>{{0, 100 * kMs, remote}};
    return std::vector<NetPiece>{};
  };
  auto r = store.Join(Span(0x60, 0x61, 0, 100 * kMs), net);
  EXPECT_EQ(ports, (std::vector<std::uint16_t>{0, 50000}));
  EXPECT_NEAR(r.breakdown.seconds[remote], 0.050, 1e-9);
  EXPECT_NEAR(r.breakdown.seconds[ISO_CAUSE_APP_BLOCKED_OTHER], 0.030, 1e-9);
}

}  // namespace
}  // namespace isoscope::correlator

namespace isoscope::correlator {
namespace {

TEST(SpanJoinNetwork, ReceiveQueueWaitTakesOnlyTheReadersSleepNotItsOtherWork) {
  EvidenceStore store;
  // Data waited 0-100 ms; the reader ran other work 0-40 ms, slept 40-100 ms.
  Feed(store, {testing::Traceparent(700, 701, 0, 0x71, 0x72),
               testing::Delay(700, 701, ISO_CAUSE_APP_BLOCKED_OTHER, 40 * kMs, 100 * kMs)});
  const abi::Cause queue = abi::NetworkCause(ISO_SLICE_POD, ISO_NET_QUEUE);
  NetLookup net = [&](const SocketTuple&, std::uint64_t, std::uint64_t) {
    return std::vector<NetPiece>{{0, 100 * kMs, queue, /*idle_only=*/true}};
  };
  auto r = store.Join(Span(0x71, 0x72, 0, 100 * kMs), net);
  EXPECT_NEAR(r.breakdown.seconds[queue], 0.060, 1e-9);
  EXPECT_NEAR(r.breakdown.seconds[ISO_CAUSE_APP_ON_CPU], 0.040, 1e-9);
}

}  // namespace
}  // namespace isoscope::correlator
