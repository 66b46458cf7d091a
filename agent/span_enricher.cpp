#include "span_enricher.hpp"

#include <algorithm>
#include <cstring>
#include <optional>
#include <variant>

#include "correlator/span_attributes.hpp"

namespace isoscope {
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
  for (auto& rs : *request.mutable_resource_spans()) {
    const std::optional<std::uint32_t> pid = ResourcePid(rs.resource());
    std::optional<std::uint32_t> bound_pid;
    for (auto& ss : *rs.mutable_scope_spans()) {
      for (auto& span : *ss.mutable_spans()) {
        if (span.kind() != trace::Span::SPAN_KIND_SERVER &&
            span.kind() != trace::Span::SPAN_KIND_CONSUMER) {
          continue;
        }
        ++stats.spans_seen;
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
        q.resource_pid = pid;
        const correlator::SpanResult r = store.Join(q);
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
        }
        for (const auto& a : correlator::SpanAttributes(r)) {
          if (a.key == "process.pid") continue;  // identity goes on the resource
          SetAttribute(*span.mutable_attributes(), a);
        }
        if (r.tgid != 0) bound_pid = r.tgid;
        if (observer) {
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
    }
    // Semantic-convention identity on the resource when the kernel told us.
    if (bound_pid && !pid) {
      SetAttribute(*rs.mutable_resource()->mutable_attributes(),
                   {"process.pid", static_cast<std::int64_t>(*bound_pid)});
    }
  }
}

}  // namespace isoscope
