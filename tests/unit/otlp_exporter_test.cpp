// The OTLP exporter against a real in-process collector over loopback gRPC: delivery, retry on
// UNAVAILABLE (scripted and with the collector really down), no retry on other codes, partial
// success, the queue bound with drop-oldest, shutdown, and the counting invariant
// received == forwarded + dropped + queued + in_flight at every snapshot.
#include "exporters/otlp/otlp_exporter.hpp"

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "otlp/test_collector.hpp"

namespace isoscope::otlp {
namespace {

using std::chrono::milliseconds;
using testing::FreePort;
using testing::MakePoints;
using testing::MakeSpans;
using testing::TestCollector;
using testing::WaitFor;

std::string Describe(const SignalStats& s) {
  std::string drops;
  for (std::size_t r = 0; r < kDropReasonCount; ++r) {
    if (s.dropped[r])
      drops += fmt::format(" {}={}", DropReasonName(static_cast<DropReason>(r)), s.dropped[r]);
  }
  return fmt::format(
      "received={} forwarded={} dropped={}[{} ] queued={} in_flight={} ok={} failed={} retries={}",
      s.received, s.forwarded, s.DroppedTotal(), drops, s.queued, s.in_flight, s.export_ok,
      s.export_failed, s.retries);
}

// Fast timings so that retries happen quickly in tests (timings are never asserted).
ExporterOptions FastOptions(const std::string& endpoint) {
  ExporterOptions o;
  o.endpoint = endpoint;
  o.batch_delay = milliseconds(5);
  o.retry.initial_backoff = milliseconds(10);
  o.retry.max_backoff = milliseconds(100);
  o.max_reconnect_backoff = milliseconds(100);
  o.rpc_timeout = milliseconds(5000);
  return o;
}

std::unique_ptr<OtlpExporter> Make(ExporterOptions o) {
  auto e = OtlpExporter::Create(std::move(o));
  EXPECT_TRUE(e.ok()) << e.error().message;
  return std::move(*e);
}

std::vector<std::string> Names(std::uint64_t first, std::uint64_t last_exclusive) {
  std::vector<std::string> v;
  for (auto i = first; i < last_exclusive; ++i) v.push_back(fmt::format("span-{}", i));
  return v;
}

// Samples the stats from another thread while the test runs; every snapshot must balance.
class InvariantWatch {
 public:
  explicit InvariantWatch(const OtlpExporter* e) : e_(e), t_([this] { Run(); }) {}
  ~InvariantWatch() { Finish(); }
  void Finish() {
    stop_ = true;
    if (t_.joinable()) t_.join();
  }
  int violations() const { return violations_; }
  int samples() const { return samples_; }
  std::string first_violation() const { return first_; }

 private:
  void Run() {
    while (!stop_) {
      for (const auto& s : {e_->SpanStats(), e_->PointStats()}) {
        ++samples_;
        if (!s.Balanced()) {
          if (violations_++ == 0) first_ = Describe(s);
        }
      }
      std::this_thread::sleep_for(milliseconds(1));
    }
  }
  const OtlpExporter* e_;
  std::atomic<bool> stop_{false};
  std::atomic<int> violations_{0};
  std::atomic<int> samples_{0};
  std::string first_;
  std::thread t_;
};

TEST(OtlpExporter, DeliversEverythingInOrder) {
  TestCollector c;
  ASSERT_GT(c.Start(), 0);
  auto e = Make(FastOptions(c.target()));
  InvariantWatch watch(e.get());
  for (int i = 0; i < 10; ++i) e->Enqueue(MakeSpans(static_cast<std::uint64_t>(i * 20), 20));
  ASSERT_TRUE(e->Flush(std::chrono::seconds(20)));
  EXPECT_EQ(c.accepted_span_names(), Names(0, 200));
  const auto s = e->SpanStats();
  EXPECT_EQ(s.received, 200u) << Describe(s);
  EXPECT_EQ(s.forwarded, 200u) << Describe(s);
  EXPECT_EQ(s.DroppedTotal(), 0u);
  EXPECT_TRUE(s.Balanced()) << Describe(s);
  // Batching: no batch holds more than max_batch_spans (512), and small requests were merged
  // whenever the sender found several queued.
  for (const auto& req : c.accepted_requests()) EXPECT_LE(CountSpans(req), 512u);
  watch.Finish();
  EXPECT_EQ(watch.violations(), 0) << watch.first_violation();
}

TEST(OtlpExporter, RetriesUnavailableThenSucceeds) {
  TestCollector c;
  ASSERT_GT(c.Start(), 0);
  c.PlanTraces({{grpc::StatusCode::UNAVAILABLE},
                {grpc::StatusCode::RESOURCE_EXHAUSTED},
                {grpc::StatusCode::DEADLINE_EXCEEDED}});
  auto e = Make(FastOptions(c.target()));
  e->Enqueue(MakeSpans(0, 7));
  ASSERT_TRUE(e->Flush(std::chrono::seconds(20)));
  const auto s = e->SpanStats();
  EXPECT_EQ(c.trace_calls(), 4);
  EXPECT_EQ(s.forwarded, 7u) << Describe(s);
  EXPECT_EQ(s.retries, 3u);
  EXPECT_EQ(s.export_failed, 3u);
  EXPECT_EQ(s.export_ok, 1u);
  EXPECT_TRUE(s.Balanced()) << Describe(s);
  EXPECT_EQ(c.accepted_span_names(), Names(0, 7));
}

TEST(OtlpExporter, DoesNotRetryOtherCodes) {
  TestCollector c;
  ASSERT_GT(c.Start(), 0);
  c.PlanTraces({{grpc::StatusCode::INVALID_ARGUMENT}, {grpc::StatusCode::PERMISSION_DENIED}});
  auto e = Make(FastOptions(c.target()));
  e->Enqueue(MakeSpans(0, 5));
  ASSERT_TRUE(e->Flush(std::chrono::seconds(20)));
  e->Enqueue(MakeSpans(5, 3));
  ASSERT_TRUE(e->Flush(std::chrono::seconds(20)));
  const auto s = e->SpanStats();
  EXPECT_EQ(c.trace_calls(), 2);
  EXPECT_EQ(s.DroppedBy(DropReason::kNonRetryable), 8u) << Describe(s);
  EXPECT_EQ(s.forwarded, 0u);
  EXPECT_EQ(s.retries, 0u);
  EXPECT_TRUE(s.Balanced()) << Describe(s);
}

TEST(OtlpExporter, CountsPartialSuccessAsRejected) {
  TestCollector c;
  ASSERT_GT(c.Start(), 0);
  c.PlanTraces({{grpc::StatusCode::OK, 3}, {grpc::StatusCode::OK, 1000}});
  auto e = Make(FastOptions(c.target()));
  e->Enqueue(MakeSpans(0, 10));
  ASSERT_TRUE(e->Flush(std::chrono::seconds(20)));
  e->Enqueue(MakeSpans(10, 4));  // the collector claims to reject more than it got: clamped
  ASSERT_TRUE(e->Flush(std::chrono::seconds(20)));
  const auto s = e->SpanStats();
  EXPECT_EQ(s.forwarded, 7u) << Describe(s);
  EXPECT_EQ(s.DroppedBy(DropReason::kRejectedByCollector), 7u) << Describe(s);
  EXPECT_TRUE(s.Balanced()) << Describe(s);
}

TEST(OtlpExporter, RetriesWhileCollectorIsDownAndDeliversWhenItComesBack) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  auto e = Make(FastOptions(fmt::format("127.0.0.1:{}", port)));
  e->Enqueue(MakeSpans(0, 5));
  ASSERT_TRUE(WaitFor([&] { return e->SpanStats().export_failed >= 3; }));
  EXPECT_EQ(e->SpanStats().in_flight, 5u);
  TestCollector c;
  ASSERT_EQ(c.Start(port), port);
  ASSERT_TRUE(e->Flush(std::chrono::seconds(20)));
  const auto s = e->SpanStats();
  EXPECT_EQ(s.forwarded, 5u) << Describe(s);
  EXPECT_GE(s.retries, 3u);
  EXPECT_TRUE(s.Balanced()) << Describe(s);
  EXPECT_EQ(c.accepted_span_names(), Names(0, 5));
}

TEST(OtlpExporter, FullQueueDropsOldestAndRespectsTheBound) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  ExporterOptions o = FastOptions(fmt::format("127.0.0.1:{}", port));
  o.max_queue_spans = 100;
  o.max_batch_spans = 50;
  auto e = Make(o);
  InvariantWatch watch(e.get());
  // The first request is taken as the batch in flight (retried while the collector is down).
  e->Enqueue(MakeSpans(0, 10));
  ASSERT_TRUE(WaitFor([&] { return e->SpanStats().in_flight == 10; }));
  std::uint64_t max_queued = 0;
  for (std::uint64_t i = 10; i < 210; i += 10) {
    e->Enqueue(MakeSpans(i, 10));
    max_queued = std::max(max_queued, e->SpanStats().queued);
  }
  auto s = e->SpanStats();
  EXPECT_EQ(s.received, 210u);
  EXPECT_EQ(s.queued, 100u) << Describe(s);
  EXPECT_LE(max_queued, 100u);
  EXPECT_EQ(s.in_flight, 10u);
  EXPECT_EQ(s.DroppedBy(DropReason::kQueueFull), 100u) << Describe(s);
  EXPECT_TRUE(s.Balanced()) << Describe(s);

  TestCollector c;
  ASSERT_EQ(c.Start(port), port);
  ASSERT_TRUE(e->Flush(std::chrono::seconds(20)));
  // Delivered: the batch that was in flight, then the newest 100; spans 10..109 were dropped.
  auto want = Names(0, 10);
  for (auto& n : Names(110, 210)) want.push_back(n);
  EXPECT_EQ(c.accepted_span_names(), want);
  s = e->SpanStats();
  EXPECT_EQ(s.forwarded, 110u) << Describe(s);
  EXPECT_TRUE(s.Balanced()) << Describe(s);
  watch.Finish();
  EXPECT_EQ(watch.violations(), 0) << watch.first_violation();
  EXPECT_GT(watch.samples(), 0);
}

TEST(OtlpExporter, OversizedRequestKeepsItsNewestSpans) {
  const int port = FreePort();
  ExporterOptions o = FastOptions(fmt::format("127.0.0.1:{}", port));
  o.max_queue_spans = 10;
  auto e = Make(o);
  e->Enqueue(MakeSpans(0, 1));
  ASSERT_TRUE(WaitFor([&] { return e->SpanStats().in_flight == 1; }));
  e->Enqueue(MakeSpans(1, 25));
  auto s = e->SpanStats();
  EXPECT_EQ(s.queued, 10u) << Describe(s);
  EXPECT_EQ(s.DroppedBy(DropReason::kQueueFull), 15u);
  TestCollector c;
  ASSERT_EQ(c.Start(port), port);
  ASSERT_TRUE(e->Flush(std::chrono::seconds(20)));
  auto want = Names(0, 1);
  for (auto& n : Names(16, 26)) want.push_back(n);
  EXPECT_EQ(c.accepted_span_names(), want);
  EXPECT_TRUE(e->SpanStats().Balanced()) << Describe(e->SpanStats());
}

TEST(OtlpExporter, GivesUpAfterMaxElapsed) {
  const int port = FreePort();
  ExporterOptions o = FastOptions(fmt::format("127.0.0.1:{}", port));
  o.retry.max_elapsed = milliseconds(200);
  auto e = Make(o);
  e->Enqueue(MakeSpans(0, 6));
  ASSERT_TRUE(e->Flush(std::chrono::seconds(20)));
  const auto s = e->SpanStats();
  EXPECT_EQ(s.DroppedBy(DropReason::kRetryExhausted), 6u) << Describe(s);
  EXPECT_GE(s.export_failed, 1u);
  EXPECT_TRUE(s.Balanced()) << Describe(s);
}

TEST(OtlpExporter, StopDropsWhatIsLeftAndCountsIt) {
  const int port = FreePort();
  ExporterOptions o = FastOptions(fmt::format("127.0.0.1:{}", port));
  o.shutdown_flush = milliseconds(100);
  auto e = Make(o);
  e->Enqueue(MakeSpans(0, 4));
  ASSERT_TRUE(WaitFor([&] { return e->SpanStats().in_flight == 4; }));
  e->Enqueue(MakeSpans(4, 6));
  e->EnqueueMetrics(MakePoints(0, 3));
  e->Stop();
  auto s = e->SpanStats();
  EXPECT_EQ(s.DroppedBy(DropReason::kShutdown), 10u) << Describe(s);
  EXPECT_EQ(s.InQueue(), 0u);
  EXPECT_TRUE(s.Balanced()) << Describe(s);
  EXPECT_EQ(e->PointStats().DroppedBy(DropReason::kShutdown), 3u);
  e->Enqueue(MakeSpans(10, 2));  // after Stop: counted, not lost
  s = e->SpanStats();
  EXPECT_EQ(s.received, 12u);
  EXPECT_EQ(s.DroppedBy(DropReason::kShutdown), 12u);
  EXPECT_TRUE(s.Balanced()) << Describe(s);
  e->Stop();  // idempotent
}

TEST(OtlpExporter, StopFlushesWhenTheCollectorIsUp) {
  TestCollector c;
  ASSERT_GT(c.Start(), 0);
  ExporterOptions o = FastOptions(c.target());
  o.batch_delay = milliseconds(1000);  // Stop must not wait for a batch to fill
  o.shutdown_flush = milliseconds(10000);
  auto e = Make(o);
  e->Enqueue(MakeSpans(0, 3));
  e->Stop();
  const auto s = e->SpanStats();
  EXPECT_EQ(s.forwarded, 3u) << Describe(s);
  EXPECT_EQ(c.accepted_span_names(), Names(0, 3));
}

TEST(OtlpExporter, ExportsMetricsWithTheSameSemantics) {
  TestCollector c;
  ASSERT_GT(c.Start(), 0);
  c.PlanMetrics({{grpc::StatusCode::UNAVAILABLE}, {grpc::StatusCode::OK, 2}});
  auto e = Make(FastOptions(c.target()));
  e->EnqueueMetrics(MakePoints(0, 9));
  ASSERT_TRUE(e->Flush(std::chrono::seconds(20)));
  const auto s = e->PointStats();
  EXPECT_EQ(c.metric_calls(), 2);
  EXPECT_EQ(c.accepted_points(), 9u);
  EXPECT_EQ(s.forwarded, 7u) << Describe(s);
  EXPECT_EQ(s.DroppedBy(DropReason::kRejectedByCollector), 2u);
  EXPECT_EQ(s.retries, 1u);
  EXPECT_TRUE(s.Balanced()) << Describe(s);
  EXPECT_EQ(e->SpanStats().received, 0u);
}

TEST(OtlpExporter, ConcurrentProducersKeepTheInvariant) {
  TestCollector c;
  ASSERT_GT(c.Start(), 0);
  ExporterOptions o = FastOptions(c.target());
  o.max_queue_spans = 64;  // small: some drops are likely, all must be counted
  auto e = Make(o);
  InvariantWatch watch(e.get());
  std::vector<std::thread> producers;
  for (int p = 0; p < 4; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < 200; ++i) {
        e->Enqueue(MakeSpans(static_cast<std::uint64_t>(p * 10000 + i * 3), 3));
      }
    });
  }
  for (auto& t : producers) t.join();
  ASSERT_TRUE(e->Flush(std::chrono::seconds(30)));
  const auto s = e->SpanStats();
  EXPECT_EQ(s.received, 2400u);
  EXPECT_EQ(s.forwarded + s.DroppedBy(DropReason::kQueueFull), 2400u) << Describe(s);
  EXPECT_EQ(c.accepted_span_names().size(), s.forwarded);
  EXPECT_TRUE(s.Balanced()) << Describe(s);
  watch.Finish();
  EXPECT_EQ(watch.violations(), 0) << watch.first_violation();
}

TEST(OtlpExporter, RejectsBadOptions) {
  ExporterOptions o;
  EXPECT_FALSE(OtlpExporter::Create(o).ok());  // no endpoint
  o.endpoint = "127.0.0.1";
  EXPECT_FALSE(OtlpExporter::Create(o).ok());  // no port
  o.endpoint = "127.0.0.1:4317";
  o.max_queue_spans = 0;
  EXPECT_FALSE(OtlpExporter::Create(o).ok());
}

}  // namespace
}  // namespace isoscope::otlp
