#include "correlator/span_enricher.hpp"

#include <algorithm>
#include <cstring>
#include <optional>
#include <random>
#include <string_view>
#include <variant>

#include <fmt/format.h>

#include "correlator/span_attributes.hpp"

namespace isoscope::correlator {
namespace {

namespace common = opentelemetry::proto::common::v1;
namespace trace = opentelemetry::proto::trace::v1;

std::optional<std::uint32_t> ResourcePid(const opentelemetry::proto::resource::v1::Resource& r) {
  for (const auto& kv : r.attributes()) {
    if (kv.key() != "process.pid") continue;
    if (kv.value().has_int_value() && kv.value().int_value() > 0) {
      return static_cast<std::uint32_t>(kv.value().int_value());
    }
  }
  return std::nullopt;
}

std::string ResourceString(const opentelemetry::proto::resource::v1::Resource& r,
                           std::string_view key) {
  for (const auto& kv : r.attributes()) {
    if (kv.key() == key && kv.value().has_string_value()) return kv.value().string_value();
  }
  return {};
}

// A span id for a child span: random, never all zero.
std::string NewSpanId() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uint64_t v = 0;
  while (v == 0) v = rng();
  return std::string(reinterpret_cast<const char*>(&v), sizeof(v));
}

void SetAttribute(google::protobuf::RepeatedPtrField<common::KeyValue>& attrs,
                  const correlator::Attribute& a) {
  common::KeyValue* kv = nullptr;
  for (auto& existing : attrs) {
    if (existing.key() == a.key) kv = &existing;
  }
  if (!kv) {
    kv = attrs.Add();
    kv->set_key(a.key);
  }
  if (const auto* s = std::get_if<std::string>(&a.value)) {
    kv->mutable_value()->set_string_value(*s);
  } else if (const auto* d = std::get_if<double>(&a.value)) {
    kv->mutable_value()->set_double_value(*d);
  } else {
    kv->mutable_value()->set_int_value(std::get<std::int64_t>(a.value));
  }
}

}  // namespace

void EnrichSpans(otlp::TraceRequest& request, const correlator::EvidenceStore& store,
                 EnrichStats& stats, const SpanObserver& observer) {
  EnrichSpans(request, store, stats, observer, EnrichOptions{}, std::string());
}

void EnrichSpans(otlp::TraceRequest& request, const correlator::EvidenceStore& store,
                 EnrichStats& stats, const SpanObserver& observer, const EnrichOptions& options,
                 const std::string& peer) {
  const correlator::ClockMap clock = correlator::ClockMap::Now();
  // Spans often arrive within milliseconds of their end, before the ring
  // buffer holding their last evidence (the binding, the final delays) has
  // been drained: wait, bounded, until the evidence reaches the latest end.
  std::uint64_t latest_end = 0;
  for (const auto& rs : request.resource_spans()) {
    for (const auto& ss : rs.scope_spans()) {
      for (const auto& span : ss.spans()) {
        latest_end = std::max(latest_end, clock.ToBoot(span.end_time_unix_nano()));
      }
    }
  }
  if (latest_end != 0 && !store.WaitForWatermark(latest_end, kEvidenceWait)) {
    ++stats.joins_without_full_evidence;
  }
  // The OTLP peer's process, looked up once per request and only if needed.
  std::optional<std::optional<std::uint32_t>> peer_pid;
  auto peer_candidates = [&]() -> std::vector<std::uint32_t> {
    if (!options.peer_process || peer.empty()) return {};
    if (!peer_pid) peer_pid = options.peer_process(peer);
    if (!*peer_pid) return {};
    return {**peer_pid};
  };
  for (auto& rs : *request.mutable_resource_spans()) {
    const std::optional<std::uint32_t> pid = ResourcePid(rs.resource());
    const std::string container_id = ResourceString(rs.resource(), "container.id");
    const std::string pod_uid = ResourceString(rs.resource(), "k8s.pod.uid");
    // Weaker bindings for this resource, computed on first need.
    std::optional<std::pair<std::vector<std::uint32_t>, correlator::Binding>> candidates;
    auto resource_candidates = [&]() {
      if (candidates) return *candidates;
      candidates.emplace();
      if (options.describe && (!container_id.empty() || !pod_uid.empty())) {
        auto tgids = store.ProcessesWhere([&](std::uint64_t v2, std::uint64_t v1) {
          const auto t = options.describe(v2, v1);
          return container_id.empty() ? t.pod_uid == pod_uid : t.container_id == container_id;
        });
        if (!tgids.empty()) {
          *candidates = {std::move(tgids), container_id.empty() ? correlator::Binding::kPod
                                                                : correlator::Binding::kContainer};
          return *candidates;
        }
      }
      if (auto tgids = peer_candidates(); !tgids.empty()) {
        *candidates = {std::move(tgids), correlator::Binding::kPeer};
      }
      return *candidates;
    };
    std::optional<correlator::SpanResult> identity;  // a bound result naming the workload
    for (auto& ss : *rs.mutable_scope_spans()) {
      std::vector<trace::Span> children;
      for (auto& span : *ss.mutable_spans()) {
        const bool inbound = span.kind() == trace::Span::SPAN_KIND_SERVER ||
                             span.kind() == trace::Span::SPAN_KIND_CONSUMER;
        const bool outbound = span.kind() == trace::Span::SPAN_KIND_CLIENT ||
                              span.kind() == trace::Span::SPAN_KIND_PRODUCER;
        if (!inbound && !outbound) continue;
        correlator::SpanQuery q;
        // The receiver has already removed spans with malformed ids.
        if (span.trace_id().size() != q.trace_id.size() ||
            span.span_id().size() != q.span_id.size()) {
          continue;
        }
        std::memcpy(q.trace_id.data(), span.trace_id().data(), q.trace_id.size());
        std::memcpy(q.span_id.data(), span.span_id().data(), q.span_id.size());
        if (span.parent_span_id().size() == q.parent_span_id.size()) {
          std::memcpy(q.parent_span_id.data(), span.parent_span_id().data(),
                      q.parent_span_id.size());
        }
        q.start_boot_ns = clock.ToBoot(span.start_time_unix_nano());
        q.end_boot_ns = clock.ToBoot(span.end_time_unix_nano());
        q.outbound = outbound;
        correlator::SpanResult r;
        if (outbound) {
          // A client call is annotated only when the kernel saw it leave:
          // its process-level evidence would repeat the server span's.
          r = store.Join(q, options.net);
          if (r.binding != correlator::Binding::kThread) continue;
          ++stats.client_spans_bound;
        } else {
          ++stats.spans_seen;
          q.resource_pid = pid;
          auto [tgids, how] = resource_candidates();
          q.candidate_tgids = std::move(tgids);
          q.candidate_binding = how;
          r = store.Join(q, options.net);
          switch (r.binding) {
            case correlator::Binding::kThread:
              ++stats.spans_bound_thread;
              break;
            case correlator::Binding::kProcess:
              ++stats.spans_bound_process;
              break;
            case correlator::Binding::kNone:
              ++stats.spans_unbound;
              break;
            case correlator::Binding::kContainer:
              ++stats.spans_bound_container;
              break;
            case correlator::Binding::kPod:
              ++stats.spans_bound_pod;
              break;
            case correlator::Binding::kPeer:
              ++stats.spans_bound_peer;
              break;
          }
        }
        for (const auto& a : correlator::SpanAttributes(r)) {
          if (a.key == "process.pid") continue;  // identity goes on the resource
          SetAttribute(*span.mutable_attributes(), a);
        }
        if (r.tgid != 0 && !identity) identity = r;
        if (options.child_span_min_s >= 0) {
          for (abi::Cause c = 0; c < ISO_CAUSE_MAX; ++c) {
            const double secs = r.breakdown.seconds[c];
            if (!abi::Blamable(c) || secs <= 0 || secs < options.child_span_min_s) continue;
            // One child per cause; its time is the cause's total over the span,
            // placed at the span's start (the cause may be spread over the span).
            trace::Span child;
            child.set_trace_id(span.trace_id());
            child.set_span_id(NewSpanId());
            child.set_parent_span_id(span.span_id());
            child.set_name(fmt::format("isoscope {}", abi::CauseName(c)));
            child.set_kind(trace::Span::SPAN_KIND_INTERNAL);
            child.set_start_time_unix_nano(span.start_time_unix_nano());
            child.set_end_time_unix_nano(span.start_time_unix_nano() +
                                         static_cast<std::uint64_t>(secs * 1e9));
            SetAttribute(*child.mutable_attributes(),
                         {"isoscope.cause", std::string(abi::CauseName(c))});
            SetAttribute(*child.mutable_attributes(),
                         {"isoscope.layer", std::string(abi::LayerName(abi::CauseLayer(c)))});
            SetAttribute(*child.mutable_attributes(), {"isoscope.cause.seconds", secs});
            SetAttribute(*child.mutable_attributes(),
                         {"isoscope.share",
                          r.breakdown.interval_s > 0 ? secs / r.breakdown.interval_s : 0.0});
            children.push_back(std::move(child));
          }
        }
        if (observer && inbound) {
          SpanOutcome o;
          o.trace_id = q.trace_id;
          o.span_id = q.span_id;
          o.start_boot_ns = q.start_boot_ns;
          o.end_boot_ns = q.end_boot_ns;
          o.duration_s = r.breakdown.interval_s;
          o.resource_pid = pid.value_or(0);
          o.result = r;
          observer(o);
        }
      }
      stats.child_spans_added += children.size();
      for (auto& child : children) *ss.add_spans() = std::move(child);
    }
    // Semantic-convention identity on the resource when the kernel told us.
    if (identity) {
      auto& attrs = *rs.mutable_resource()->mutable_attributes();
      if (!pid) SetAttribute(attrs, {"process.pid", static_cast<std::int64_t>(identity->tgid)});
      if (options.describe && (identity->cgroup_v2_id || identity->cgroup_v1_cpu_id)) {
        const auto t = options.describe(identity->cgroup_v2_id, identity->cgroup_v1_cpu_id);
        if (container_id.empty() && !t.container_id.empty()) {
          SetAttribute(attrs, {"container.id", t.container_id});
        }
        if (pod_uid.empty() && !t.pod_uid.empty()) SetAttribute(attrs, {"k8s.pod.uid", t.pod_uid});
        // OpenTelemetry semantic conventions (k8s.*): only what the application did not say.
        for (const auto& [key, value] : {std::pair<std::string_view, const std::string*>{
                                             "k8s.namespace.name", &t.namespace_name},
                                         {"k8s.pod.name", &t.pod_name},
                                         {"k8s.container.name", &t.container_name}}) {
          if (!value->empty() && ResourceString(rs.resource(), key).empty()) {
            SetAttribute(attrs, {std::string(key), *value});
          }
        }
      }
      if (!options.node_name.empty() && ResourceString(rs.resource(), "k8s.node.name").empty()) {
        SetAttribute(attrs, {"k8s.node.name", options.node_name});
      }
    }
  }
}

}  // namespace isoscope::correlator
