// Exporters: `trace --json` schema, the human table, and the Prometheus metrics.
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "correlator/breakdown.hpp"
#include "exporters/json/trace_json.hpp"
#include "exporters/prometheus/prometheus_exporter.hpp"
#include "exporters/table/trace_table.hpp"
#include "isoscope/abi.hpp"
#include "testing/metrics_checks.hpp"

namespace isoscope::exporters {
namespace {

using correlator::IntervalReport;
using nlohmann::json;

// The sketch of shared/TAXONOMY.md: 4 threads over 2 s, throttled 78% of the time.
IntervalReport ThrottledReport() {
  IntervalReport r;
  r.target.pid = 4242;
  r.target.comm = "node";
  r.target.cgroup = "/kubepods/burstable/pod5b2c/3f1a";
  r.target.pod_uid = "5b2c9e1d-0000-4000-8000-000000000001";
  r.target.container_id = "3f1a9d8e7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1ac2";
  r.target.cgroup_mode = "v2";
  r.breakdown.interval_s = 2.0;
  r.breakdown.threads = 4;
  r.breakdown.thread_seconds = 8.0;
  r.breakdown.seconds[ISO_CAUSE_CONTAINER_CPU_THROTTLE] = 6.24;
  r.breakdown.seconds[ISO_CAUSE_APP_ON_CPU] = 1.60;
  r.breakdown.seconds[ISO_CAUSE_CONTAINER_RUNQUEUE] = 0.12;
  r.breakdown.seconds[ISO_CAUSE_APP_BLOCKED_OTHER] = 0.04;
  r.verdict = correlator::ComputeVerdict(r.breakdown);
  return r;
}

// Mostly the workload's own CPU time: no isolation cause reaches the threshold.
IntervalReport QuietReport() {
  IntervalReport r;
  r.target.pid = 7;
  r.breakdown.interval_s = 1.0;
  r.breakdown.threads = 1;
  r.breakdown.thread_seconds = 1.0;
  r.breakdown.seconds[ISO_CAUSE_APP_ON_CPU] = 0.969;
  r.breakdown.seconds[ISO_CAUSE_CONTAINER_RUNQUEUE] = 0.031;
  r.verdict = correlator::ComputeVerdict(r.breakdown);
  return r;
}

// ---------------------------------------------------------------------------------------------
// JSON

TEST(TraceJson, TopLevelKeysAndTypes) {
  const json j = TraceIntervalJson(ThrottledReport());
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.size(), 6u);
  ASSERT_TRUE(j.contains("target"));
  EXPECT_TRUE(j["target"].is_object());
  ASSERT_TRUE(j.contains("interval_s"));
  EXPECT_TRUE(j["interval_s"].is_number_float());
  EXPECT_DOUBLE_EQ(j["interval_s"].get<double>(), 2.0);
  ASSERT_TRUE(j.contains("thread_seconds"));
  EXPECT_TRUE(j["thread_seconds"].is_number_float());
  EXPECT_DOUBLE_EQ(j["thread_seconds"].get<double>(), 8.0);
  ASSERT_TRUE(j.contains("threads"));
  EXPECT_TRUE(j["threads"].is_number_integer());
  EXPECT_EQ(j["threads"].get<int>(), 4);
  ASSERT_TRUE(j.contains("breakdown"));
  EXPECT_TRUE(j["breakdown"].is_array());
  ASSERT_TRUE(j.contains("verdict"));
  EXPECT_TRUE(j["verdict"].is_object());
  // `trace --json` prints one line per interval.
  EXPECT_EQ(j.dump().find('\n'), std::string::npos);
}

TEST(TraceJson, TargetKeysOnlyWhenKnown) {
  IntervalReport r = ThrottledReport();
  json t = TraceIntervalJson(r)["target"];
  EXPECT_EQ(t.size(), 5u);
  EXPECT_TRUE(t["pid"].is_number_integer());
  EXPECT_EQ(t["pid"].get<int>(), 4242);
  EXPECT_EQ(t["cgroup"], "/kubepods/burstable/pod5b2c/3f1a");
  EXPECT_EQ(t["pod_uid"], r.target.pod_uid);
  EXPECT_EQ(t["container_id"], r.target.container_id);
  EXPECT_EQ(t["comm"], "node");
  EXPECT_FALSE(t.contains("cgroup_mode"));

  r.target = {};
  r.target.cgroup = "/sys/fs/cgroup/batch";
  t = TraceIntervalJson(r)["target"];
  EXPECT_EQ(t, json({{"cgroup", "/sys/fs/cgroup/batch"}}));

  r.target = {};
  t = TraceIntervalJson(r)["target"];
  EXPECT_TRUE(t.is_object());
  EXPECT_TRUE(t.empty());
}

TEST(TraceJson, BreakdownEntriesAndOrder) {
  const json b = TraceIntervalJson(ThrottledReport())["breakdown"];
  // The six thread-state causes always; nothing else was measured.
  ASSERT_EQ(b.size(), static_cast<std::size_t>(ISO_THREAD_CAUSES));
  for (const json& e : b) {
    ASSERT_TRUE(e.is_object());
    EXPECT_EQ(e.size(), 4u);
    EXPECT_TRUE(e["layer"].is_string());
    EXPECT_TRUE(e["cause"].is_string());
    EXPECT_TRUE(e["seconds"].is_number());
    EXPECT_TRUE(e["share"].is_number());
  }
  EXPECT_EQ(b[0], json({{"layer", "container"},
                        {"cause", "container.cpu_throttle"},
                        {"seconds", 6.24},
                        {"share", 6.24 / 8.0}}));
  EXPECT_EQ(b[1]["cause"], "app.on_cpu");
  EXPECT_EQ(b[1]["layer"], "app");
  EXPECT_DOUBLE_EQ(b[1]["share"].get<double>(), 0.2);
  EXPECT_EQ(b[2]["cause"], "container.runqueue");
  EXPECT_EQ(b[3]["cause"], "app.blocked_other");
  for (std::size_t i = 1; i < b.size(); ++i) {
    EXPECT_GE(b[i - 1]["seconds"].get<double>(), b[i]["seconds"].get<double>()) << i;
  }
  // Zero causes still listed, with seconds and share 0.
  EXPECT_EQ(b[4]["seconds"].get<double>(), 0.0);
  EXPECT_EQ(b[5]["share"].get<double>(), 0.0);
}

TEST(TraceJson, OtherCausesListedOnlyWhenMeasured) {
  IntervalReport r = ThrottledReport();
  const abi::Cause pod_queue = abi::NetworkCause(ISO_SLICE_POD, ISO_NET_QUEUE);
  r.breakdown.seconds[pod_queue] = 0.5;
  const json b = TraceIntervalJson(r)["breakdown"];
  ASSERT_EQ(b.size(), static_cast<std::size_t>(ISO_THREAD_CAUSES) + 1);
  EXPECT_EQ(b[2], json({{"layer", "network"},
                        {"cause", "network.pod.queue"},
                        {"seconds", 0.5},
                        {"share", 0.5 / 8.0},
                        {"slice", "pod"},
                        {"mechanism", "queue"}}));
  for (const json& e : b) EXPECT_NE(e["cause"], "sandbox.gvisor_syscall");
}

TEST(TraceJson, Verdict) {
  const IntervalReport r = ThrottledReport();
  const json v = TraceIntervalJson(r)["verdict"];
  ASSERT_EQ(v.size(), 4u);
  EXPECT_EQ(v["layer"], "container");
  EXPECT_EQ(v["cause"], "container.cpu_throttle");
  EXPECT_TRUE(v["share"].is_number_float());
  EXPECT_TRUE(v["confidence"].is_number_float());
  EXPECT_DOUBLE_EQ(v["share"].get<double>(), r.verdict.share);
  EXPECT_DOUBLE_EQ(v["confidence"].get<double>(), r.verdict.confidence);
}

TEST(TraceJson, NoneVerdict) {
  const IntervalReport r = QuietReport();
  ASSERT_FALSE(r.verdict.cause.has_value());
  const json v = TraceIntervalJson(r)["verdict"];
  EXPECT_EQ(v["layer"], "none");
  EXPECT_EQ(v["cause"], "none");
  EXPECT_NEAR(v["share"].get<double>(), 0.031, 1e-12);  // the top blamable share
  EXPECT_DOUBLE_EQ(v["confidence"].get<double>(), r.verdict.confidence);
}

TEST(TraceJson, ZeroThreadSecondsGivesZeroShares) {
  IntervalReport r;
  r.breakdown.interval_s = 1.0;
  r.verdict = correlator::ComputeVerdict(r.breakdown);
  const json j = TraceIntervalJson(r);
  for (const json& e : j["breakdown"]) EXPECT_EQ(e["share"].get<double>(), 0.0);
  EXPECT_EQ(j["verdict"]["cause"], "none");
}

void ExpectSameReport(const IntervalReport& a, const IntervalReport& b) {
  EXPECT_EQ(a.target.pid, b.target.pid);
  EXPECT_EQ(a.target.cgroup, b.target.cgroup);
  EXPECT_EQ(a.target.pod_uid, b.target.pod_uid);
  EXPECT_EQ(a.target.container_id, b.target.container_id);
  EXPECT_EQ(a.target.comm, b.target.comm);
  EXPECT_EQ(a.breakdown.interval_s, b.breakdown.interval_s);
  EXPECT_EQ(a.breakdown.thread_seconds, b.breakdown.thread_seconds);
  EXPECT_EQ(a.breakdown.threads, b.breakdown.threads);
  for (abi::Cause c = 0; c < ISO_CAUSE_MAX; ++c) {
    EXPECT_EQ(a.breakdown.seconds[c], b.breakdown.seconds[c]) << abi::CauseName(c);
  }
  EXPECT_EQ(a.verdict.cause, b.verdict.cause);
  EXPECT_EQ(a.verdict.share, b.verdict.share);
  EXPECT_EQ(a.verdict.confidence, b.verdict.confidence);
}

TEST(TraceJson, RoundTrip) {
  IntervalReport r = ThrottledReport();
  r.breakdown.seconds[abi::NetworkCause(ISO_SLICE_REMOTE, ISO_NET_PROTOCOL)] = 0.25;
  r.breakdown.seconds[ISO_CAUSE_HYPERVISOR_STEAL] = 0.125;
  r.verdict = correlator::ComputeVerdict(r.breakdown);
  // Through text, as tools read it back from `trace --json`.
  auto parsed = ParseTraceIntervalJson(json::parse(TraceIntervalJson(r).dump()));
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  ExpectSameReport(r, parsed.value());
  EXPECT_EQ(TraceIntervalJson(parsed.value()), TraceIntervalJson(r));
}

// A pod target: the runtime's names, its sandbox and the interval's notes survive the text.
TEST(TraceJson, RoundTripPodNamesAndNotes) {
  IntervalReport r = ThrottledReport();
  r.target.pid.reset();
  r.target.namespace_name = "shop";
  r.target.pod_name = "checkout-7f9c4-x2z9q";
  r.target.container_name = "app";
  r.target.sandbox = "gvisor";
  r.notes = {"container app restarted: attempt 0 -> 1, id 3f1a9d8e7c6b -> 9c2e00000000"};
  const json j = TraceIntervalJson(r);
  EXPECT_EQ(j["target"]["namespace"], "shop");
  EXPECT_EQ(j["target"]["pod"], "checkout-7f9c4-x2z9q");
  EXPECT_EQ(j["target"]["container"], "app");
  EXPECT_EQ(j["target"]["sandbox"], "gvisor");
  EXPECT_EQ(j["notes"].size(), 1u);
  auto parsed = ParseTraceIntervalJson(json::parse(j.dump()));
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ(parsed->target.pod_name, "checkout-7f9c4-x2z9q");
  EXPECT_EQ(parsed->target.namespace_name, "shop");
  EXPECT_EQ(parsed->target.container_name, "app");
  EXPECT_EQ(parsed->target.sandbox, "gvisor");
  EXPECT_EQ(parsed->notes, r.notes);
  EXPECT_EQ(TraceIntervalJson(parsed.value()), j);
  EXPECT_FALSE(TraceIntervalJson(ThrottledReport()).contains("notes"));
  json bad = j;
  bad["notes"] = {1};
  EXPECT_FALSE(ParseTraceIntervalJson(bad).ok());
}

TEST(TraceJson, NetworkSectionAndRequests) {
  IntervalReport r = ThrottledReport();
  r.network.measured = true;
  r.network.flows = 3;
  r.network.rows = {{abi::NetworkCause(ISO_SLICE_POD, ISO_NET_QUEUE), 0.3, 0.75},
                    {abi::NetworkCause(ISO_SLICE_NODE, ISO_NET_PROTOCOL), 0.1, 0.25}};
  r.network.total_seconds = 0.4;
  r.network.retransmits = 2;
  r.network.retransmits_spurious = 1;
  r.network.drops = {{"tc_egress", 5}};
  const json j = TraceIntervalJson(r);
  EXPECT_EQ(j["network"], json({{"flows", 3},
                                {"seconds", 0.4},
                                {"retransmits", 2},
                                {"retransmits_spurious", 1},
                                {"drops", {{"tc_egress", 5}}}}));
  const json& last = j["breakdown"].back();
  EXPECT_EQ(last["cause"], "network.node.protocol");
  EXPECT_EQ(last["slice"], "node");
  EXPECT_EQ(last["mechanism"], "protocol");
  EXPECT_DOUBLE_EQ(last["share"].get<double>(), 0.1 / 8.0);  // of thread_seconds, like every row
  auto parsed = ParseTraceIntervalJson(json::parse(j.dump()));
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  ExpectSameReport(r, parsed.value());
  ASSERT_EQ(parsed.value().network.rows.size(), 2u);
  EXPECT_DOUBLE_EQ(parsed.value().network.rows[0].share, 0.75);
  EXPECT_EQ(parsed.value().network.drops.at("tc_egress"), 5u);
  EXPECT_EQ(parsed.value().network.retransmits_spurious, 1u);
  EXPECT_EQ(TraceIntervalJson(parsed.value()), j);
  // A slice that contradicts its cause is refused.
  json bad = j;
  bad["breakdown"].back()["slice"] = "pod";
  EXPECT_FALSE(ParseTraceIntervalJson(bad).ok());

  correlator::RequestReport req;
  req.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  req.span_id = "00f067aa0ba902b7";
  req.binding = "thread";
  req.breakdown.interval_s = 0.2;
  req.breakdown.thread_seconds = 0.2;
  req.breakdown.threads = 1;
  req.breakdown.seconds[ISO_CAUSE_APP_ON_CPU] = 0.05;
  req.breakdown.seconds[abi::NetworkCause(ISO_SLICE_POD, ISO_NET_QUEUE)] = 0.15;
  req.verdict = correlator::ComputeVerdict(req.breakdown);
  const json rj = TraceRequestJson(req);
  EXPECT_EQ(rj["trace_id"], req.trace_id);
  EXPECT_EQ(rj["span_id"], req.span_id);
  EXPECT_DOUBLE_EQ(rj["duration_s"].get<double>(), 0.2);
  EXPECT_EQ(rj["binding"], "thread");
  EXPECT_EQ(rj["breakdown"][0]["cause"], "network.pod.queue");
  EXPECT_EQ(rj["breakdown"][0]["slice"], "pod");
  EXPECT_DOUBLE_EQ(rj["breakdown"][0]["share"].get<double>(), 0.75);
  EXPECT_EQ(rj["verdict"]["cause"], "network.pod.queue");

  IntervalReport quiet = ThrottledReport();
  quiet.network.measured = true;  // measured, but the target has no flows: no section
  EXPECT_EQ(RenderTraceTable(quiet).find("network"), std::string::npos);
  r.requests = {req};
  const std::string table = RenderTraceTable(r);
  EXPECT_NE(table.find("network 3 flows, 0.40 s"), std::string::npos) << table;
  EXPECT_NE(table.find("retransmits 2 (1 spurious) · drops: tc_egress 5"), std::string::npos)
      << table;
  EXPECT_NE(table.find("requests (1 with spans)"), std::string::npos) << table;
  EXPECT_NE(table.find("trace 4bf92f35…    200.0 ms  network.pod.queue 75%  (thread)"),
            std::string::npos)
      << table;
}

TEST(TraceJson, RoundTripNoneVerdictAndEmptyTarget) {
  IntervalReport r = QuietReport();
  r.target = {};
  auto parsed = ParseTraceIntervalJson(TraceIntervalJson(r));
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  ExpectSameReport(r, parsed.value());
  EXPECT_FALSE(parsed->verdict.cause.has_value());
}

TEST(TraceJson, RejectsUnknownCauseNames) {
  json j = TraceIntervalJson(ThrottledReport());
  j["breakdown"][0]["cause"] = "container.cpu_thottle";
  auto parsed = ParseTraceIntervalJson(j);
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message.find("unknown cause \"container.cpu_thottle\""),
            std::string::npos)
      << parsed.error().message;
  EXPECT_NE(parsed.error().message.find("breakdown[0]"), std::string::npos);

  j = TraceIntervalJson(ThrottledReport());
  j["verdict"]["cause"] = "kernel.gremlins";
  parsed = ParseTraceIntervalJson(j);
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message.find("kernel.gremlins"), std::string::npos);
}

TEST(TraceJson, RejectsMissingAndMistypedFields) {
  const json good = TraceIntervalJson(ThrottledReport());
  for (const char* key :
       {"target", "interval_s", "thread_seconds", "threads", "breakdown", "verdict"}) {
    json j = good;
    j.erase(key);
    auto parsed = ParseTraceIntervalJson(j);
    ASSERT_FALSE(parsed.ok()) << key;
    EXPECT_NE(parsed.error().message.find(key), std::string::npos) << parsed.error().message;
  }
  struct Case {
    json::json_pointer path;
    json value;
  };
  const std::vector<Case> bad = {
      {json::json_pointer("/interval_s"), "2.0"},
      {json::json_pointer("/threads"), -1},
      {json::json_pointer("/threads"), 1.5},
      {json::json_pointer("/target/pid"), "4242"},
      {json::json_pointer("/target/comm"), 5},
      {json::json_pointer("/breakdown"), json::object()},
      {json::json_pointer("/breakdown/0/seconds"), nullptr},
      {json::json_pointer("/breakdown/0/seconds"), -1.0},
      {json::json_pointer("/breakdown/0/layer"), "app"},
      {json::json_pointer("/breakdown/1/cause"), "container.cpu_throttle"},  // listed twice
      {json::json_pointer("/verdict/confidence"), "high"},
      {json::json_pointer("/verdict/cause"), "app.on_cpu"},  // never blamed
      {json::json_pointer("/verdict/layer"), "network"},
  };
  for (const Case& c : bad) {
    json j = good;
    j[c.path] = c.value;
    auto parsed = ParseTraceIntervalJson(j);
    ASSERT_FALSE(parsed.ok()) << c.path.to_string() << " = " << c.value.dump();
    EXPECT_FALSE(parsed.error().message.empty());
  }
  json j = good;
  j["verdict"].erase("share");
  EXPECT_FALSE(ParseTraceIntervalJson(j).ok());
  EXPECT_FALSE(ParseTraceIntervalJson(json::array()).ok());
  EXPECT_FALSE(ParseTraceIntervalJson(json()).ok());
}

// ---------------------------------------------------------------------------------------------
// Table

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(TraceTable, HeaderAndVerdict) {
  const std::string out = RenderTraceTable(ThrottledReport());
  const auto lines = Lines(out);
  ASSERT_GE(lines.size(), 4u);
  EXPECT_EQ(lines[0],
            "isoscope trace pid 4242 (node) · pod 5b2c9e1d-0000-4000-8000-000000000001 · "
            "container 3f1a…c2 · cgroup v2 · 4 threads");
  EXPECT_EQ(lines[1], "verdict  container.cpu_throttle  78%  (confidence 0.98)");
  EXPECT_EQ(lines[2], "");
  EXPECT_EQ(lines[3].rfind("interval 2.0 s, 8.0 thread-s", 0), 0u) << lines[3];
  EXPECT_NE(lines[3].find("seconds"), std::string::npos);
  EXPECT_NE(lines[3].find("share"), std::string::npos);
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(out.find("\x1b["), std::string::npos);  // no colour unless asked
}

TEST(TraceTable, PodTargetHeaderNamesPodSandboxContainerAndNotes) {
  IntervalReport r = ThrottledReport();
  r.target.pid.reset();
  r.target.comm.clear();
  r.target.namespace_name = "shop";
  r.target.pod_name = "checkout-7f9c4-x2z9q";
  r.target.container_name = "app";
  r.target.sandbox = "gvisor";
  r.notes = {"container app restarted: attempt 0 -> 1"};
  const auto lines = Lines(RenderTraceTable(r));
  EXPECT_EQ(lines[0],
            "isoscope trace pod shop/checkout-7f9c4-x2z9q · sandbox gvisor · container app "
            "(3f1a…c2) · cgroup /kubepods/burstable/pod5b2c/3f1a (v2) · 4 threads");
  EXPECT_EQ(lines[1], "note: container app restarted: attempt 0 -> 1");
  EXPECT_EQ(lines[2].rfind("verdict  container.cpu_throttle", 0), 0u);
}

TEST(TraceTable, HeaderOmitsUnknownParts) {
  IntervalReport r = QuietReport();
  EXPECT_EQ(Lines(RenderTraceTable(r))[0], "isoscope trace pid 7 · 1 thread");
  r.target = {};
  r.target.cgroup = "/sys/fs/cgroup/batch";
  r.target.cgroup_mode = "v1";
  EXPECT_EQ(Lines(RenderTraceTable(r))[0],
            "isoscope trace cgroup /sys/fs/cgroup/batch (v1) · 1 thread");
}

TEST(TraceTable, NoneVerdict) {
  const auto lines = Lines(RenderTraceTable(QuietReport()));
  ASSERT_GE(lines.size(), 2u);
  EXPECT_EQ(lines[1].rfind("verdict  none  (top isolation share 3.1%, confidence ", 0), 0u)
      << lines[1];
}

TEST(TraceTable, RowsSortedWithSecondsSharesAndBars) {
  const auto lines = Lines(RenderTraceTable(ThrottledReport()));
  ASSERT_EQ(lines.size(), 8u);
  const std::vector<std::string> names = {"container.cpu_throttle", "app.on_cpu",
                                          "container.runqueue", "app.blocked_other"};
  const std::vector<std::string> seconds = {"6.24", "1.60", "0.12", "0.04"};
  const std::vector<std::string> shares = {"78.0%", "20.0%", "1.5%", "0.5%"};
  for (std::size_t i = 0; i < names.size(); ++i) {
    std::istringstream row(lines[4 + i]);
    std::string name, secs, share;
    row >> name >> secs >> share;
    EXPECT_EQ(name, names[i]) << lines[4 + i];
    EXPECT_EQ(secs, seconds[i]) << lines[4 + i];
    EXPECT_EQ(share, shares[i]) << lines[4 + i];
    EXPECT_EQ(lines[4 + i].rfind("  ", 0), 0u);
  }
  // 78% of 30 cells = 23.4: 23 full blocks and 3/8.
  std::string bar;
  for (int i = 0; i < 23; ++i) bar += "█";
  EXPECT_NE(lines[4].find("  " + bar + "▍"), std::string::npos) << lines[4];
  EXPECT_NE(lines[5].find("  ██████"), std::string::npos);  // 20% = 6 cells exactly
  EXPECT_EQ(lines[5].find("███████"), std::string::npos);
  EXPECT_NE(lines[6].find("▌"), std::string::npos);  // 1.5% = 0.45 cell = 4/8
  // Columns line up: every share ends at the same offset.
  const std::size_t end = lines[4].find('%');
  for (std::size_t i = 5; i < 8; ++i) EXPECT_EQ(lines[i].find('%'), end) << lines[i];
  const std::size_t seconds_end = lines[3].find("seconds") + std::string("seconds").size();
  EXPECT_EQ(lines[4].find("6.24") + 4, seconds_end);
}

TEST(TraceTable, OmitsZeroRowsAndShowsOtherCauses) {
  IntervalReport r = ThrottledReport();
  r.breakdown.seconds[abi::NetworkCause(ISO_SLICE_SANDBOX, ISO_NET_SCHEDULING)] = 0.5;
  const std::string out = RenderTraceTable(r);
  EXPECT_EQ(out.find("container.memory_reclaim"), std::string::npos);
  EXPECT_EQ(out.find("app.blocked_io"), std::string::npos);
  EXPECT_EQ(out.find("hypervisor"), std::string::npos);
  const auto lines = Lines(out);
  ASSERT_EQ(lines.size(), 9u);
  EXPECT_NE(lines[6].find("network.sandbox.scheduling"), std::string::npos);
  EXPECT_NE(lines[6].find("6.2%"), std::string::npos);
}

TEST(TraceTable, EmptyInterval) {
  IntervalReport r;
  r.target.pid = 1;
  r.breakdown.interval_s = 2.0;
  r.verdict = correlator::ComputeVerdict(r.breakdown);
  const auto lines = Lines(RenderTraceTable(r));
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[1], "verdict  none  (top isolation share 0.0%, confidence 0.00)");
  EXPECT_EQ(lines[3].rfind("interval 2.0 s, 0.0 thread-s", 0), 0u);
  EXPECT_EQ(lines[4], "  (no thread activity measured in this interval)");
}

TEST(TraceTable, ColorKeepsText) {
  const IntervalReport r = ThrottledReport();
  const std::string colored = RenderTraceTable(r, true);
  EXPECT_NE(colored.find("\x1b["), std::string::npos);
  const std::string stripped = std::regex_replace(colored, std::regex("\x1b\\[[0-9;]*m"), "");
  EXPECT_EQ(stripped, RenderTraceTable(r));
}

// ---------------------------------------------------------------------------------------------
// Prometheus

// The value of the one sample line that starts with `series` ("name{labels}"), or -1.
double Sample(const std::string& scrape, const std::string& series) {
  for (const std::string& line : Lines(scrape)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

using testing::Workload;

TEST(Prometheus, FamiliesHaveHelpAndTypes) {
  PrometheusExporter exporter;
  exporter.OnInterval({ThrottledReport()});
  exporter.OnDelay(ISO_CAUSE_CONTAINER_RUNQUEUE, 0.002, ThrottledReport().target);
  exporter.SetSelfStats({{{"delay", 1}}, {{"ringbuf_full", 0}}, {{"handle_switch", true, 1, 1}}});
  const std::string s = exporter.Scrape();
  const std::map<std::string, std::string> families = {
      {"isoscope_cause_seconds_total", "counter"},
      {"isoscope_thread_seconds_total", "counter"},
      {"isoscope_delay_seconds", "histogram"},
      {"isoscope_verdicts_total", "counter"},
      {"isoscope_records_received_total", "counter"},
      {"isoscope_records_lost_total", "counter"},
      {"isoscope_bpf_program_run_seconds_total", "counter"},
      {"isoscope_bpf_program_runs_total", "counter"},
      {"isoscope_probe_up", "gauge"},
      {"isoscope_workloads_overflow_total", "counter"},
  };
  for (const auto& [name, type] : families) {
    EXPECT_NE(s.find("# TYPE " + name + " " + type + "\n"), std::string::npos) << name;
    EXPECT_NE(s.find("# HELP " + name + " "), std::string::npos) << name;
  }
  // prometheus-cpp 1.0 does not add a second suffix.
  EXPECT_EQ(s.find("_total_total"), std::string::npos);
  EXPECT_EQ(s, exporter.Scrape());
}

TEST(Prometheus, OnIntervalCauseThreadAndVerdictSeries) {
  PrometheusExporter exporter;
  const IntervalReport r = ThrottledReport();
  const std::string w = "cgroup=\"" + r.target.cgroup + "\",container=\"\",container_id=\"" +
                        r.target.container_id + "\"";
  const std::string pod = "namespace=\"\",pod=\"\",pod_uid=\"" + r.target.pod_uid + "\"";
  exporter.OnInterval({r, QuietReport()});
  exporter.OnInterval({r});
  const std::string s = exporter.Scrape();
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_cause_seconds_total{cause=\"container.cpu_throttle\"," + w +
                                 ",layer=\"container\"," + pod + "}"),
                   2 * 6.24);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_cause_seconds_total{cause=\"app.on_cpu\"," + w +
                                 ",layer=\"app\"," + pod + "}"),
                   2 * 1.60);
  // Causes with zero seconds get no series.
  EXPECT_EQ(s.find("cause=\"container.memory_reclaim\""), std::string::npos);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_thread_seconds_total{" + w + "," + pod + "}"), 16.0);
  EXPECT_DOUBLE_EQ(Sample(s,
                          "isoscope_verdicts_total{cause=\"container.cpu_throttle\","
                          "layer=\"container\"}"),
                   2.0);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_verdicts_total{cause=\"none\",layer=\"none\"}"), 1.0);
  // QuietReport has only a pid: its workload labels are empty strings.
  EXPECT_DOUBLE_EQ(
      Sample(s,
             "isoscope_thread_seconds_total{cgroup=\"\",container=\"\",container_id=\"\","
             "namespace=\"\",pod=\"\",pod_uid=\"\"}"),
      1.0);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_workloads_overflow_total"), 0.0);
}

// The runtime's names are labels too (kube-state-metrics' namespace, pod, container).
TEST(Prometheus, KubernetesNamesAreLabels) {
  PrometheusExporter exporter;
  IntervalReport r = ThrottledReport();
  r.target.namespace_name = "shop";
  r.target.pod_name = "checkout-7f9c4-x2z9q";
  r.target.container_name = "app";
  exporter.OnInterval({r});
  const std::string s = exporter.Scrape();
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_thread_seconds_total{cgroup=\"" + r.target.cgroup +
                                 "\",container=\"app\",container_id=\"" + r.target.container_id +
                                 "\",namespace=\"shop\",pod=\"checkout-7f9c4-x2z9q\",pod_uid=\"" +
                                 r.target.pod_uid + "\"}"),
                   8.0);
}

TEST(Prometheus, OnDelayHistogram) {
  PrometheusExporter exporter;
  const auto w = Workload("/a", "pod-a", "ctr-a");
  exporter.OnDelay(ISO_CAUSE_CONTAINER_CPU_THROTTLE, 0.003, w);
  exporter.OnDelay(ISO_CAUSE_CONTAINER_CPU_THROTTLE, 0.2, w);
  exporter.OnDelay(ISO_CAUSE_CONTAINER_CPU_THROTTLE, 7.0, w);
  exporter.OnDelay(ISO_CAUSE_MAX, 1.0, w);                      // unknown cause: ignored
  exporter.OnDelay(ISO_CAUSE_CONTAINER_CPU_THROTTLE, -1.0, w);  // ignored
  const std::string s = exporter.Scrape();
  const std::string labels =
      "cause=\"container.cpu_throttle\",cgroup=\"/"
      "a\",container=\"\",container_id=\"ctr-a\",namespace=\"\",pod=\"\",pod_uid=\"pod-a\"";
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_delay_seconds_count{" + labels + "}"), 3.0);
  EXPECT_NEAR(Sample(s, "isoscope_delay_seconds_sum{" + labels + "}"), 7.203, 1e-9);
  const std::map<std::string, double> buckets = {
      {"0.0001", 0}, {"0.0005", 0}, {"0.001", 0}, {"0.005", 1}, {"0.01", 1}, {"0.05", 1},
      {"0.1", 1},    {"0.5", 2},    {"1", 2},     {"5", 2},     {"+Inf", 3}};
  for (const auto& [le, count] : buckets) {
    EXPECT_DOUBLE_EQ(Sample(s, "isoscope_delay_seconds_bucket{" + labels + ",le=\"" + le + "\"}"),
                     count)
        << le;
  }
}

TEST(Prometheus, SelfStatsAdvanceByDeltas) {
  PrometheusExporter exporter;
  SelfStats stats;
  stats.received_by_kind = {{"thread_totals", 10}, {"delay", 3}};
  stats.lost_by_reason = {{"ringbuf_full", 0}, {"tasks_map_full", 0}, {"invalid", 0}};
  stats.programs = {{"handle_sched_switch", true, 2'000'000'000, 100},
                    {"handle_unthrottle", false, 0, 0}};
  exporter.SetSelfStats(stats);
  std::string s = exporter.Scrape();
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_records_received_total{kind=\"thread_totals\"}"), 10);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_records_received_total{kind=\"delay\"}"), 3);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_records_lost_total{reason=\"ringbuf_full\"}"), 0);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_records_lost_total{reason=\"tasks_map_full\"}"), 0);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_records_lost_total{reason=\"invalid\"}"), 0);
  EXPECT_DOUBLE_EQ(
      Sample(s, "isoscope_bpf_program_run_seconds_total{program=\"handle_sched_switch\"}"), 2.0);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_bpf_program_runs_total{program=\"handle_sched_switch\"}"),
                   100);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_probe_up{program=\"handle_sched_switch\"}"), 1);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_probe_up{program=\"handle_unthrottle\"}"), 0);

  // The same cumulative values again: nothing moves.
  exporter.SetSelfStats(stats);
  EXPECT_EQ(exporter.Scrape(), s);

  stats.received_by_kind["thread_totals"] = 25;
  stats.lost_by_reason["ringbuf_full"] = 4;
  stats.programs[0].run_ns = 2'500'000'000;
  stats.programs[0].run_cnt = 130;
  stats.programs[1].up = true;
  exporter.SetSelfStats(stats);
  s = exporter.Scrape();
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_records_received_total{kind=\"thread_totals\"}"), 25);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_records_received_total{kind=\"delay\"}"), 3);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_records_lost_total{reason=\"ringbuf_full\"}"), 4);
  EXPECT_DOUBLE_EQ(
      Sample(s, "isoscope_bpf_program_run_seconds_total{program=\"handle_sched_switch\"}"), 2.5);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_bpf_program_runs_total{program=\"handle_sched_switch\"}"),
                   130);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_probe_up{program=\"handle_unthrottle\"}"), 1);

  // A restarted source (cumulative value went down) never makes a counter decrease.
  stats.received_by_kind["thread_totals"] = 5;
  exporter.SetSelfStats(stats);
  s = exporter.Scrape();
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_records_received_total{kind=\"thread_totals\"}"), 30);
  stats.received_by_kind["thread_totals"] = 9;
  exporter.SetSelfStats(stats);
  EXPECT_DOUBLE_EQ(
      Sample(exporter.Scrape(), "isoscope_records_received_total{kind=\"thread_totals\"}"), 34);
}

TEST(Prometheus, OverflowFoldsWorkloadsBeyondTheLimit) {
  PrometheusExporter exporter(2);
  auto report = [](const std::string& cgroup, const std::string& pod, double on_cpu) {
    IntervalReport r;
    r.target = Workload(cgroup, pod, "ctr" + pod);
    r.breakdown.interval_s = 1;
    r.breakdown.threads = 1;
    r.breakdown.thread_seconds = on_cpu;
    r.breakdown.seconds[ISO_CAUSE_APP_ON_CPU] = on_cpu;
    r.verdict = correlator::ComputeVerdict(r.breakdown);
    return r;
  };
  exporter.OnInterval(
      {report("/a", "a", 1), report("/b", "b", 2), report("/c", "c", 4), report("/d", "d", 8)});
  // Known workloads keep their series; a known one is never folded later.
  exporter.OnInterval({report("/a", "a", 0.5), report("/e", "e", 16)});
  exporter.OnDelay(ISO_CAUSE_CONTAINER_RUNQUEUE, 0.01, Workload("/f", "f", "ctrf"));
  const std::string s = exporter.Scrape();
  const std::string other =
      "cgroup=\"other\",container=\"\",container_id=\"\",namespace=\"\",pod=\"\",pod_uid=\"\"";
  EXPECT_DOUBLE_EQ(
      Sample(s,
             "isoscope_thread_seconds_total{cgroup=\"/"
             "a\",container=\"\",container_id=\"ctra\",namespace=\"\",pod=\"\",pod_uid=\"a\"}"),
      1.5);
  EXPECT_DOUBLE_EQ(
      Sample(s,
             "isoscope_thread_seconds_total{cgroup=\"/"
             "b\",container=\"\",container_id=\"ctrb\",namespace=\"\",pod=\"\",pod_uid=\"b\"}"),
      2);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_thread_seconds_total{" + other + "}"), 28);
  EXPECT_DOUBLE_EQ(
      Sample(
          s,
          "isoscope_cause_seconds_total{cause=\"app.on_cpu\",cgroup=\"other\","
          "container=\"\",container_id=\"\",layer=\"app\",namespace=\"\",pod=\"\",pod_uid=\"\"}"),
      28);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_workloads_overflow_total"), 3);
  EXPECT_DOUBLE_EQ(
      Sample(s, "isoscope_delay_seconds_count{cause=\"container.runqueue\"," + other + "}"), 1);
  for (const char* folded : {"/c", "/d", "/e", "/f"}) {
    EXPECT_EQ(s.find(std::string("cgroup=\"") + folded + "\""), std::string::npos) << folded;
  }
}

TEST(Prometheus, ServeOnBadAddressReturnsError) {
  PrometheusExporter exporter;
  Status status = Status();
  EXPECT_NO_THROW(status = exporter.Serve("256.1.1.1:1"));
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message.find("256.1.1.1:1"), std::string::npos)
      << status.error().message;
  EXPECT_FALSE(exporter.Serve("").ok());
  EXPECT_TRUE(exporter.ListeningPorts().empty());
}

TEST(Prometheus, ServeOnFreePort) {
  PrometheusExporter exporter;
  const Status status = exporter.Serve("127.0.0.1:0");
  ASSERT_TRUE(status.ok()) << status.error().message;
  ASSERT_EQ(exporter.ListeningPorts().size(), 1u);
  EXPECT_GT(exporter.ListeningPorts()[0], 0);
  EXPECT_FALSE(exporter.Serve("127.0.0.1:0").ok());  // already serving
  // The port is taken now: a second exporter cannot bind it.
  PrometheusExporter second;
  const std::string taken = "127.0.0.1:" + std::to_string(exporter.ListeningPorts()[0]);
  Status again = Status();
  EXPECT_NO_THROW(again = second.Serve(taken));
  EXPECT_FALSE(again.ok());
}

TEST(Prometheus, PromtoolAcceptsTheScrape) {
  if (!testing::HavePromtool()) GTEST_SKIP() << "no " << testing::kPromtool;
  PrometheusExporter exporter(1);
  IntervalReport r = ThrottledReport();
  r.breakdown.seconds[abi::NetworkCause(ISO_SLICE_POD, ISO_NET_PROTOCOL)] = 0.3;
  exporter.OnInterval({r, QuietReport()});
  exporter.OnDelay(ISO_CAUSE_CONTAINER_CPU_THROTTLE, 0.05, r.target);
  SelfStats stats;
  stats.received_by_kind = {{"thread_totals", 10}, {"delay", 3}};
  stats.lost_by_reason = {{"ringbuf_full", 1}, {"tasks_map_full", 0}, {"invalid", 0}};
  stats.programs = {{"handle_sched_switch", true, 123456, 7}};
  exporter.SetSelfStats(stats);

  testing::ExpectPromtoolAccepts(exporter.Scrape());
}

}  // namespace
}  // namespace isoscope::exporters
