// The agent's span enricher on synthetic evidence: what it writes into OTLP spans (attributes,
// resource identity, child spans) for SERVER and CLIENT spans and each binding.
#include "correlator/span_enricher.hpp"

#include <map>
#include <string>

#include <gtest/gtest.h>

#include "collectors/source/event_source.hpp"
#include "correlator/span_attributes.hpp"
#include "testing/event_builder.hpp"

namespace isoscope::correlator {
namespace {

namespace trace = opentelemetry::proto::trace::v1;
constexpr std::uint64_t kMs = 1000000;

void Feed(correlator::EvidenceStore& store, const std::vector<testing::Bytes>& recs) {
  correlator::EvidenceSink sink(store);
  source::SyntheticSource src(recs);
  while (*src.NextInterval(sink)) {
  }
  store.SetWatermark(~0ull);  // all evidence is in: no waiting
}

std::string Id(std::uint8_t seed, std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i);
  return s;
}

// Span times are epoch ns; the evidence is on the boot clock.
std::uint64_t Epoch(std::uint64_t boot_ns) {
  return boot_ns + static_cast<std::uint64_t>(correlator::ClockMap::Now().real_minus_boot_ns);
}

trace::Span* AddSpan(otlp::TraceRequest& req, trace::Span::SpanKind kind, std::uint8_t trace_seed,
                     std::uint8_t span_seed, std::uint8_t parent_seed, std::uint64_t start,
                     std::uint64_t end, std::int64_t resource_pid = 0) {
  auto* rs = req.add_resource_spans();
  if (resource_pid) {
    auto* kv = rs->mutable_resource()->add_attributes();
    kv->set_key("process.pid");
    kv->mutable_value()->set_int_value(resource_pid);
  }
  auto* span = rs->add_scope_spans()->add_spans();
  span->set_trace_id(Id(trace_seed, 16));
  span->set_span_id(Id(span_seed, 8));
  if (parent_seed) span->set_parent_span_id(Id(parent_seed, 8));
  span->set_kind(kind);
  span->set_start_time_unix_nano(Epoch(start));
  span->set_end_time_unix_nano(Epoch(end));
  return span;
}

std::map<std::string, std::string> Attrs(const google::protobuf::RepeatedPtrField<
                                         opentelemetry::proto::common::v1::KeyValue>& kvs) {
  std::map<std::string, std::string> out;
  for (const auto& kv : kvs) {
    const auto& v = kv.value();
    out[kv.key()] = v.has_string_value()   ? v.string_value()
                    : v.has_double_value() ? std::to_string(v.double_value())
                                           : std::to_string(v.int_value());
  }
  return out;
}

TEST(SpanEnricher, ClientSpanGetsTheNetworkCausesOfItsFlowAndChildSpans) {
  correlator::EvidenceStore store;
  auto out = testing::Traceparent(200, 201, 1000 * kMs, 0x20, 0x70);
  reinterpret_cast<iso_rec_traceparent*>(out.data())->flags |= ISO_TP_F_OUTBOUND;
  Feed(store, {out, testing::Delay(200, 201, ISO_CAUSE_APP_BLOCKED_OTHER, 1000 * kMs, 1100 * kMs)});

  otlp::TraceRequest req;
  AddSpan(req, trace::Span::SPAN_KIND_CLIENT, 0x20, 0x70, 0x01, 1000 * kMs, 1100 * kMs);
  // A CLIENT span the kernel never saw leave stays untouched.
  AddSpan(req, trace::Span::SPAN_KIND_CLIENT, 0x21, 0x71, 0x01, 1000 * kMs, 1100 * kMs);
  EnrichStats stats;
  EnrichOptions options;
  const abi::Cause queue = abi::NetworkCause(ISO_SLICE_POD, ISO_NET_QUEUE);
  options.net = [&](const correlator::SocketTuple&, std::uint64_t, std::uint64_t) {
    return std::vector<correlator::NetPiece>{{1010 * kMs, 1070 * kMs, queue}};
  };
  options.child_span_min_s = 0.010;
  int observed = 0;
  EnrichSpans(req, store, stats, [&](const SpanOutcome&) { ++observed; }, options, "");

  const auto& bound = req.resource_spans(0).scope_spans(0);
  auto a = Attrs(bound.spans(0).attributes());
  EXPECT_EQ(a["isoscope.binding"], "thread");
  EXPECT_EQ(a["isoscope.verdict.cause"], "network.pod.queue");
  EXPECT_NEAR(std::stod(a["isoscope.cause.network.pod.queue.seconds"]), 0.060, 1e-6);
  EXPECT_NEAR(std::stod(a["isoscope.cause.app.blocked_other.seconds"]), 0.040, 1e-6);
  // One child for the one blamable cause, parented to the client span.
  ASSERT_EQ(bound.spans_size(), 2);
  const auto& child = bound.spans(1);
  EXPECT_EQ(child.parent_span_id(), bound.spans(0).span_id());
  EXPECT_EQ(child.trace_id(), bound.spans(0).trace_id());
  EXPECT_EQ(child.kind(), trace::Span::SPAN_KIND_INTERNAL);
  EXPECT_EQ(child.name(), "isoscope network.pod.queue");
  EXPECT_EQ(child.end_time_unix_nano() - child.start_time_unix_nano(), 60 * kMs);
  EXPECT_EQ(Attrs(child.attributes())["isoscope.cause"], "network.pod.queue");
  EXPECT_EQ(stats.child_spans_added, 1u);
  EXPECT_EQ(stats.client_spans_bound, 1u);
  EXPECT_EQ(req.resource_spans(1).scope_spans(0).spans(0).attributes_size(), 0);
  EXPECT_EQ(observed, 0);  // the observer sees SERVER/CONSUMER spans only
  // The bound process goes on the resource.
  EXPECT_EQ(Attrs(req.resource_spans(0).resource().attributes())["process.pid"], "200");
}

TEST(SpanEnricher, ServerSpanResourceGetsContainerIdentityAndBindsByContainerId) {
  correlator::EvidenceStore store;
  auto tp = testing::Traceparent(300, 301, 0, 0x30, 0x31);
  reinterpret_cast<iso_rec_hdr*>(tp.data())->cgroup_v2_id = 42;
  auto d = testing::Delay(400, 401, ISO_CAUSE_CONTAINER_CPU_THROTTLE, 10 * kMs, 90 * kMs);
  reinterpret_cast<iso_rec_hdr*>(d.data())->cgroup_v2_id = 43;
  Feed(store, {tp, d});
  EnrichOptions options;
  options.describe = [](std::uint64_t v2, std::uint64_t) {
    correlator::TargetInfo t;
    if (v2 == 42) t.container_id = "c42", t.pod_uid = "pod-42";
    if (v2 == 43) t.container_id = "c43", t.pod_uid = "pod-43";
    return t;
  };
  otlp::TraceRequest req;
  AddSpan(req, trace::Span::SPAN_KIND_SERVER, 0x30, 0x90, 0x31, 0, 100 * kMs);
  // A span with no trace context seen: its resource names container c43.
  auto* other = AddSpan(req, trace::Span::SPAN_KIND_SERVER, 0x50, 0x91, 0x51, 0, 100 * kMs);
  (void)other;
  auto* kv = req.mutable_resource_spans(1)->mutable_resource()->add_attributes();
  kv->set_key("container.id");
  kv->mutable_value()->set_string_value("c43");
  EnrichStats stats;
  std::vector<correlator::Binding> seen;
  EnrichSpans(req, store, stats, [&](const SpanOutcome& o) { seen.push_back(o.result.binding); },
              options, "");
  auto r0 = Attrs(req.resource_spans(0).resource().attributes());
  EXPECT_EQ(r0["container.id"], "c42");
  EXPECT_EQ(r0["k8s.pod.uid"], "pod-42");
  auto s1 = Attrs(req.resource_spans(1).scope_spans(0).spans(0).attributes());
  EXPECT_EQ(s1["isoscope.binding"], "container");
  EXPECT_EQ(s1["isoscope.verdict.cause"], "container.cpu_throttle");
  EXPECT_EQ(seen, (std::vector<correlator::Binding>{correlator::Binding::kThread,
                                                     correlator::Binding::kContainer}));
  EXPECT_EQ(stats.spans_bound_container, 1u);
  EXPECT_EQ(stats.child_spans_added, 0u);  // off by default
}

// The runtime's names go on the resource as OpenTelemetry's k8s.* attributes, the node's name
// too; an attribute the application set is never replaced.
TEST(SpanEnricher, ResourceGetsKubernetesNamesWithoutReplacingTheApplications) {
  correlator::EvidenceStore store;
  auto tp = testing::Traceparent(700, 701, 0, 0x70, 0x71);
  reinterpret_cast<iso_rec_hdr*>(tp.data())->cgroup_v2_id = 77;
  auto tp2 = testing::Traceparent(710, 711, 0, 0x72, 0x73);
  reinterpret_cast<iso_rec_hdr*>(tp2.data())->cgroup_v2_id = 77;
  Feed(store, {tp, tp2});
  EnrichOptions options;
  options.node_name = "node-1";
  options.describe = [](std::uint64_t v2, std::uint64_t) {
    correlator::TargetInfo t;
    if (v2 == 77) {
      t.container_id = "c77";
      t.pod_uid = "pod-77";
      t.namespace_name = "shop";
      t.pod_name = "checkout-7f9c4-x2z9q";
      t.container_name = "app";
    }
    return t;
  };
  otlp::TraceRequest req;
  AddSpan(req, trace::Span::SPAN_KIND_SERVER, 0x70, 0x94, 0x71, 0, 100 * kMs);
  AddSpan(req, trace::Span::SPAN_KIND_SERVER, 0x72, 0x95, 0x73, 0, 100 * kMs);
  auto* own = req.mutable_resource_spans(1)->mutable_resource()->add_attributes();
  own->set_key("k8s.pod.name");
  own->mutable_value()->set_string_value("as-the-app-says");
  EnrichStats stats;
  EnrichSpans(req, store, stats, {}, options, "");
  auto r0 = Attrs(req.resource_spans(0).resource().attributes());
  EXPECT_EQ(r0["k8s.namespace.name"], "shop");
  EXPECT_EQ(r0["k8s.pod.name"], "checkout-7f9c4-x2z9q");
  EXPECT_EQ(r0["k8s.container.name"], "app");
  EXPECT_EQ(r0["k8s.node.name"], "node-1");
  EXPECT_EQ(r0["k8s.pod.uid"], "pod-77");
  auto r1 = Attrs(req.resource_spans(1).resource().attributes());
  EXPECT_EQ(r1["k8s.pod.name"], "as-the-app-says");
  EXPECT_EQ(r1["k8s.namespace.name"], "shop");
  int pod_names = 0;
  for (const auto& kv : req.resource_spans(1).resource().attributes()) {
    pod_names += kv.key() == "k8s.pod.name";
  }
  EXPECT_EQ(pod_names, 1);
}

TEST(SpanEnricher, OtlpPeerProcessIsTheLastResort) {
  correlator::EvidenceStore store;
  Feed(store, {testing::Delay(500, 501, ISO_CAUSE_CONTAINER_RUNQUEUE, 0, 50 * kMs)});
  EnrichOptions options;
  int lookups = 0;
  options.peer_process = [&](const std::string& peer) -> std::optional<std::uint32_t> {
    ++lookups;
    EXPECT_EQ(peer, "ipv4:127.0.0.1:40000");
    return 500;
  };
  otlp::TraceRequest req;
  AddSpan(req, trace::Span::SPAN_KIND_SERVER, 0x60, 0x92, 0x61, 0, 100 * kMs);
  AddSpan(req, trace::Span::SPAN_KIND_SERVER, 0x62, 0x93, 0x63, 0, 100 * kMs);
  EnrichStats stats;
  EnrichSpans(req, store, stats, {}, options, "ipv4:127.0.0.1:40000");
  EXPECT_EQ(lookups, 1);  // once per request
  auto a = Attrs(req.resource_spans(0).scope_spans(0).spans(0).attributes());
  EXPECT_EQ(a["isoscope.binding"], "peer");
  EXPECT_EQ(stats.spans_bound_peer, 2u);
  EXPECT_EQ(a["isoscope.verdict.cause"], "container.runqueue");
}

}  // namespace
}  // namespace isoscope::correlator
