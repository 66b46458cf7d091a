// Collector + correlator on synthetic records: the aggregation math.
#include <cstdio>
#include <filesystem>

#include <gtest/gtest.h>

#include "collectors/container/thread_table.hpp"
#include "collectors/source/event_source.hpp"
#include "correlator/aggregate.hpp"
#include "testing/event_builder.hpp"

namespace isoscope {
namespace {

using testing::Bytes;
using testing::Snapshot;
using testing::ThreadBuilder;
constexpr std::uint64_t kMs = 1000000;
constexpr std::uint64_t kS = 1000 * kMs;

std::vector<container::IntervalSample> Collect(std::vector<Bytes> records) {
  std::vector<container::IntervalSample> out;
  container::ThreadTable table([&](const container::IntervalSample& s) { out.push_back(s); });
  source::SyntheticSource src(std::move(records));
  while (true) {
    auto more = src.NextInterval(table);
    EXPECT_TRUE(more.ok());
    if (!more.ok() || !*more) break;
  }
  return out;
}

TEST(ThreadTable, FirstSnapshotIsABaselineAndDeltasIncludeTheOpenSegment) {
  ThreadBuilder t(100, 101);
  t.Add(ISO_CAUSE_APP_ON_CPU, 50 * kMs).Open(ISO_CAUSE_CONTAINER_CPU_THROTTLE, 1 * kS);
  std::vector<Bytes> recs = {t.Totals(1 * kS), Snapshot(1 * kS)};
  // One second later: 200 ms more on CPU, throttled since 1.2 s (open segment).
  t.Add(ISO_CAUSE_CONTAINER_CPU_THROTTLE, 0).Add(ISO_CAUSE_APP_ON_CPU, 200 * kMs);
  t.Open(ISO_CAUSE_CONTAINER_CPU_THROTTLE, 1200 * kMs);
  recs.push_back(t.Totals(2 * kS));
  recs.push_back(Snapshot(2 * kS));

  auto samples = Collect(recs);
  ASSERT_EQ(samples.size(), 1u);
  ASSERT_EQ(samples[0].threads.size(), 1u);
  const auto& d = samples[0].threads[0];
  EXPECT_EQ(d.tid, 101u);
  EXPECT_EQ(d.ns[ISO_CAUSE_APP_ON_CPU], 200 * kMs);
  // Baseline had 0 throttle (segment opened at the snapshot time); now 800 ms open.
  EXPECT_EQ(d.ns[ISO_CAUSE_CONTAINER_CPU_THROTTLE], 800 * kMs);
  EXPECT_EQ(samples[0].start_ns, 1 * kS);
  EXPECT_EQ(samples[0].end_ns, 2 * kS);
}

TEST(ThreadTable, RacyReadThatRunsAheadNeverGoesNegativeAndTelescopes) {
  ThreadBuilder t(1, 2);
  std::vector<Bytes> recs = {t.Totals(0), Snapshot(0)};
  // Snapshot 1 over-reads: 600 ms closed on CPU while the open segment still
  // starts at 0 (BPF updated cause_ns but not yet seg_start).
  ThreadBuilder ahead = t;
  ahead.Add(ISO_CAUSE_APP_ON_CPU, 600 * kMs).Open(ISO_CAUSE_APP_ON_CPU, 0);
  recs.push_back(ahead.Totals(1 * kS));  // effective on_cpu = 1.6 s
  recs.push_back(Snapshot(1 * kS));
  // Snapshot 2 is consistent: on_cpu 2.0 s.
  t.Add(ISO_CAUSE_APP_ON_CPU, 600 * kMs).Open(ISO_CAUSE_APP_ON_CPU, 600 * kMs);
  recs.push_back(t.Totals(2 * kS));
  recs.push_back(Snapshot(2 * kS));

  auto samples = Collect(recs);
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[0].threads[0].ns[ISO_CAUSE_APP_ON_CPU], 1600 * kMs);
  EXPECT_EQ(samples[1].threads[0].ns[ISO_CAUSE_APP_ON_CPU], 400 * kMs);
}

TEST(ThreadTable, ExitRecordsGiveFinalDeltaAndForgetTheThread) {
  ThreadBuilder t(7, 8);
  t.Open(ISO_CAUSE_APP_ON_CPU, 0);
  std::vector<Bytes> recs = {t.Totals(0), Snapshot(0)};
  t.Add(ISO_CAUSE_APP_ON_CPU, 300 * kMs).Add(ISO_CAUSE_APP_BLOCKED_IO, 100 * kMs);
  recs.push_back(t.Exit(400 * kMs));
  recs.push_back(Snapshot(1 * kS));
  recs.push_back(Snapshot(2 * kS));
  container::ThreadTable* table_ptr = nullptr;
  std::vector<container::IntervalSample> out;
  container::ThreadTable table([&](const container::IntervalSample& s) { out.push_back(s); });
  table_ptr = &table;
  source::SyntheticSource src(recs);
  while (*src.NextInterval(table)) {
  }
  ASSERT_EQ(out.size(), 2u);
  ASSERT_EQ(out[0].threads.size(), 1u);
  EXPECT_TRUE(out[0].threads[0].exited);
  EXPECT_EQ(out[0].threads[0].ns[ISO_CAUSE_APP_ON_CPU], 300 * kMs);
  EXPECT_EQ(out[0].threads[0].ns[ISO_CAUSE_APP_BLOCKED_IO], 100 * kMs);
  EXPECT_TRUE(out[1].threads.empty());
  EXPECT_EQ(table_ptr->tracked_threads(), 0u);
}

TEST(Aggregate, FiltersByProcessAndByCgroupHierarchySeparately) {
  ThreadBuilder a(10, 10), b(10, 11), c(20, 20);
  a.Cgroups(1, 500);
  b.Cgroups(1, 500);
  c.Cgroups(500, 7);  // same number, other hierarchy: must not match a v1 filter
  std::vector<Bytes> recs = {a.Totals(0), b.Totals(0), c.Totals(0), Snapshot(0)};
  a.Add(ISO_CAUSE_CONTAINER_CPU_THROTTLE, 700 * kMs).Add(ISO_CAUSE_APP_ON_CPU, 300 * kMs);
  b.Add(ISO_CAUSE_APP_ON_CPU, 1 * kS);
  c.Add(ISO_CAUSE_CONTAINER_RUNQUEUE, 1 * kS);
  for (auto* t : {&a, &b, &c}) recs.push_back(t->Open(ISO_CAUSE_APP_ON_CPU, 1 * kS).Totals(1 * kS));
  recs.push_back(Snapshot(1 * kS));
  auto samples = Collect(recs);
  ASSERT_EQ(samples.size(), 1u);

  correlator::TargetFilter by_pid;
  by_pid.tgid = 10;
  auto bp = correlator::Aggregate(samples[0], by_pid);
  EXPECT_EQ(bp.threads, 2u);
  EXPECT_DOUBLE_EQ(bp.thread_seconds, 2.0);
  EXPECT_DOUBLE_EQ(bp.Share(ISO_CAUSE_CONTAINER_CPU_THROTTLE), 0.35);

  correlator::TargetFilter by_v1;
  by_v1.v1_cpu_ids = {500};
  EXPECT_EQ(correlator::Aggregate(samples[0], by_v1).threads, 2u);
  correlator::TargetFilter by_v2;
  by_v2.v2_ids = {500};
  auto bv2 = correlator::Aggregate(samples[0], by_v2);
  EXPECT_EQ(bv2.threads, 1u);
  EXPECT_DOUBLE_EQ(bv2.seconds[ISO_CAUSE_CONTAINER_RUNQUEUE], 1.0);

  auto groups = correlator::AggregateByCgroup(samples[0]);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ((groups[correlator::WorkloadKey{500, true}].threads), 2u);
  EXPECT_EQ((groups[correlator::WorkloadKey{500, false}].threads), 1u);
}

correlator::Breakdown Make(std::initializer_list<std::pair<abi::Cause, double>> parts,
                           double interval = 1.0, std::uint32_t threads = 1) {
  correlator::Breakdown b;
  b.interval_s = interval;
  b.threads = threads;
  for (auto [c, s] : parts) {
    b.seconds[c] += s;
    b.thread_seconds += s;
  }
  return b;
}

TEST(Verdict, DominantIsolationCauseAboveTenPercent) {
  auto v = correlator::ComputeVerdict(Make({{ISO_CAUSE_CONTAINER_CPU_THROTTLE, 0.78},
                                           {ISO_CAUSE_APP_ON_CPU, 0.2},
                                           {ISO_CAUSE_CONTAINER_RUNQUEUE, 0.02}}));
  ASSERT_TRUE(v.cause.has_value());
  EXPECT_EQ(*v.cause, static_cast<abi::Cause>(ISO_CAUSE_CONTAINER_CPU_THROTTLE));
  EXPECT_DOUBLE_EQ(v.share, 0.78);
  EXPECT_NEAR(v.confidence, 0.78 / 0.80, 1e-9);
}

TEST(Verdict, NeverBlamesTheWorkloadsOwnTime) {
  auto v = correlator::ComputeVerdict(
      Make({{ISO_CAUSE_APP_BLOCKED_OTHER, 0.9}, {ISO_CAUSE_CONTAINER_RUNQUEUE, 0.05},
            {ISO_CAUSE_APP_ON_CPU, 0.05}}));
  EXPECT_FALSE(v.cause.has_value());
  EXPECT_DOUBLE_EQ(v.share, 0.05);
  EXPECT_GT(v.confidence, 0.7);
}

TEST(Verdict, ThresholdIsStrictlyAboveTenPercent) {
  EXPECT_FALSE(correlator::ComputeVerdict(
                   Make({{ISO_CAUSE_CONTAINER_RUNQUEUE, 0.1}, {ISO_CAUSE_APP_ON_CPU, 0.9}}))
                   .cause);
  EXPECT_TRUE(correlator::ComputeVerdict(
                  Make({{ISO_CAUSE_CONTAINER_RUNQUEUE, 0.11}, {ISO_CAUSE_APP_ON_CPU, 0.89}}))
                  .cause);
}

TEST(Verdict, NetworkAndLaterLayersCompeteOnEqualTerms) {
  auto v = correlator::ComputeVerdict(
      Make({{abi::NetworkCause(ISO_SLICE_POD, ISO_NET_QUEUE), 0.5},
            {ISO_CAUSE_CONTAINER_CPU_THROTTLE, 0.3}, {ISO_CAUSE_APP_ON_CPU, 0.2}}));
  ASSERT_TRUE(v.cause);
  EXPECT_EQ(abi::CauseName(*v.cause), "network.pod.queue");
  EXPECT_NEAR(v.confidence, 0.5 / 0.8, 1e-9);
}

TEST(Verdict, LowCoverageLowersConfidence) {
  // Two threads over 1 s but only 1 thread-second measured.
  auto v = correlator::ComputeVerdict(
      Make({{ISO_CAUSE_CONTAINER_CPU_THROTTLE, 0.8}, {ISO_CAUSE_APP_ON_CPU, 0.2}}, 1.0, 2));
  EXPECT_NEAR(v.confidence, 0.5, 1e-9);
  EXPECT_FALSE(correlator::ComputeVerdict(correlator::Breakdown{}).cause);
}

TEST(RecordReplay, WriterOutputReplaysToTheSameSamples) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("isoscope-replay-" + std::to_string(::getpid()) + ".isorec");
  ThreadBuilder t(3, 4);
  std::vector<Bytes> recs = {t.Totals(0), Snapshot(0)};
  t.Add(ISO_CAUSE_CONTAINER_RUNQUEUE, 250 * kMs).Add(ISO_CAUSE_APP_ON_CPU, 750 * kMs);
  recs.push_back(testing::Delay(3, 4, ISO_CAUSE_CONTAINER_RUNQUEUE, 100 * kMs, 350 * kMs));
  recs.push_back(t.Totals(1 * kS));
  recs.push_back(Snapshot(1 * kS));
  const auto live = Collect(recs);

  {
    auto writer = source::RecordWriter::Create(path.string());
    ASSERT_TRUE(writer.ok()) << writer.error().message;
    source::SyntheticSource src(recs);
    while (*src.NextInterval(**writer)) {
    }
    ASSERT_TRUE((*writer)->Close().ok());
    EXPECT_EQ((*writer)->records(), recs.size());
  }
  auto replay = source::ReplaySource::Open(path.string());
  ASSERT_TRUE(replay.ok()) << replay.error().message;
  std::vector<container::IntervalSample> replayed;
  container::ThreadTable table([&](const container::IntervalSample& s) { replayed.push_back(s); });
  while (true) {
    auto more = (*replay)->NextInterval(table);
    ASSERT_TRUE(more.ok());
    if (!*more) break;
  }
  ASSERT_EQ(replayed.size(), live.size());
  EXPECT_EQ(replayed[0].threads[0].ns, live[0].threads[0].ns);
  ASSERT_EQ(replayed[0].delays.size(), 1u);
  EXPECT_EQ(replayed[0].delays[0].cause, static_cast<std::uint32_t>(ISO_CAUSE_CONTAINER_RUNQUEUE));
  EXPECT_EQ((*replay)->stats().received[ISO_REC_SNAPSHOT], 2u);
  std::filesystem::remove(path);
}

TEST(RecordReplay, CorruptFilesGiveClearErrors) {
  const auto dir = std::filesystem::temp_directory_path();
  const auto junk = dir / ("isoscope-junk-" + std::to_string(::getpid()));
  {
    std::FILE* f = std::fopen(junk.c_str(), "wb");
    std::fputs("definitely not a recording, but long enough to hold a header......"
               "................................................................",
               f);
    std::fclose(f);
  }
  auto r = source::ReplaySource::Open(junk.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("bad magic"), std::string::npos);
  EXPECT_FALSE(source::ReplaySource::Open((dir / "does-not-exist.isorec").string()).ok());

  // A valid header followed by a record whose size field lies.
  auto writer = source::RecordWriter::Create(junk.string());
  ASSERT_TRUE(writer.ok());
  auto rec = ThreadBuilder(1, 1).Totals(0);
  reinterpret_cast<iso_rec_hdr*>(rec.data())->size = 4000;
  (*writer)->OnRecord(iso_rec_hdr{}, rec);
  ASSERT_TRUE((*writer)->Close().ok());
  auto bad = source::ReplaySource::Open(junk.string());
  ASSERT_TRUE(bad.ok());
  container::ThreadTable table([](const container::IntervalSample&) {});
  auto more = (*bad)->NextInterval(table);
  ASSERT_FALSE(more.ok());
  EXPECT_NE(more.error().message.find("corrupt record"), std::string::npos);
  EXPECT_EQ((*bad)->stats().invalid, 1u);
  std::filesystem::remove(junk);
}

TEST(Sources, InvalidRecordsAreCountedNotDelivered) {
  auto good = ThreadBuilder(1, 1).Totals(0);
  auto wrong = good;
  reinterpret_cast<iso_rec_hdr*>(wrong.data())->abi_version = 99;
  source::SyntheticSource src({good, wrong, Snapshot(0)});
  std::size_t delivered = 0;
  struct Counter : source::RecordSink {
    std::size_t* n;
    void OnRecord(const iso_rec_hdr&, std::span<const std::byte>) override { ++*n; }
  } counter;
  counter.n = &delivered;
  ASSERT_TRUE(*src.NextInterval(counter));
  EXPECT_EQ(delivered, 2u);
  EXPECT_EQ(src.stats().invalid, 1u);
  EXPECT_EQ(src.stats().received[ISO_REC_THREAD_TOTALS], 1u);
}

}  // namespace
}  // namespace isoscope
