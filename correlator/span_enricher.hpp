// The correlation step of the agent's OTLP path: for every SERVER or CONSUMER
// span, joins the kernel evidence of the thread that served it
// (correlator::EvidenceStore) and writes isoscope's attributes into the span
// (docs/otlp-correlation.md). A CLIENT or PRODUCER span is annotated too when
// the kernel saw the request it sent (outbound traceparent). Other spans pass
// through untouched.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "collectors/otlp/otlp_codec.hpp"
#include "correlator/span_join.hpp"

namespace isoscope::correlator {

struct EnrichStats {
  std::atomic<std::uint64_t> spans_seen{0};
  std::atomic<std::uint64_t> spans_bound_thread{0};
  std::atomic<std::uint64_t> spans_bound_process{0};
  std::atomic<std::uint64_t> spans_unbound{0};
  // Requests joined after kEvidenceWait without the evidence reaching their
  // spans' end (the agent was not draining: stopped, or overloaded).
  std::atomic<std::uint64_t> joins_without_full_evidence{0};
  std::atomic<std::uint64_t> spans_bound_container{0};
  std::atomic<std::uint64_t> spans_bound_pod{0};
  std::atomic<std::uint64_t> spans_bound_peer{0};
  std::atomic<std::uint64_t> client_spans_bound{0};  // CLIENT/PRODUCER spans annotated
  std::atomic<std::uint64_t> child_spans_added{0};   // one per cause above the threshold
};

// Upper bound on how long a request waits for its evidence (drains run every
// 100 ms).
inline constexpr std::chrono::milliseconds kEvidenceWait{500};

// What the enricher concluded for one SERVER/CONSUMER span: for metrics and
// `isoscope trace` rows. `result.cgroup_*` name the workload when bound.
struct SpanOutcome {
  correlator::TraceId trace_id{};
  correlator::SpanId span_id{};
  std::uint64_t start_boot_ns = 0;
  std::uint64_t end_boot_ns = 0;
  double duration_s = 0;
  std::uint32_t resource_pid = 0;  // process.pid of the span's resource, 0 if absent
  correlator::SpanResult result;
};
using SpanObserver = std::function<void(const SpanOutcome&)>;

// Optional sources of evidence and identity; every member may be left empty.
struct EnrichOptions {
  // Network intervals of a bound socket's flow (docs/network.md).
  correlator::NetLookup net;
  // Workload identity of a cgroup (v2 id, v1 cpu id): container.id, k8s.pod.uid and, where the
  // container runtime named them, k8s.namespace.name, k8s.pod.name and k8s.container.name go on
  // the resource (never replacing what the application set), and spans whose resource names a
  // container or pod bind to its processes.
  std::function<correlator::TargetInfo(std::uint64_t, std::uint64_t)> describe;
  // The process at the other end of the OTLP connection ("ipv4:127.0.0.1:4567").
  std::function<std::optional<std::uint32_t>(const std::string&)> peer_process;
  // A child span per blamable cause of at least this many seconds, parented
  // to the span (INTERNAL, named "isoscope <cause>"); < 0: none.
  double child_span_min_s = -1;
  // k8s.node.name on the resource of every span bound to this node's threads ("" = leave out).
  std::string node_name;
};

// Joins and annotates every SERVER/CONSUMER span in `request`; `observer`, when
// set, is called once per such span after its attributes are written.
void EnrichSpans(otlp::TraceRequest& request, const correlator::EvidenceStore& store,
                 EnrichStats& stats, const SpanObserver& observer = {});
// The same with the optional evidence of `options`; `peer` is the OTLP
// connection's peer address, empty when unknown.
void EnrichSpans(otlp::TraceRequest& request, const correlator::EvidenceStore& store,
                 EnrichStats& stats, const SpanObserver& observer, const EnrichOptions& options,
                 const std::string& peer);

}  // namespace isoscope::correlator
