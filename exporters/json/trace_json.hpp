// `isoscope trace --json`: one JSON object per interval (schema in docs and below).
//
//   {"target":{"pid":4242,"cgroup":"...","pod_uid":"...","container_id":"...","comm":"...",
//              "namespace":"shop","pod":"checkout-7f9c","container":"app","sandbox":"gvisor"},
//    "interval_s":2.0,"thread_seconds":8.0,"threads":4,
//    "breakdown":[{"layer":"container","cause":"container.cpu_throttle","seconds":6.24,
//                  "share":0.78},...],
//    "verdict":{"layer":"container","cause":"container.cpu_throttle","share":0.78,
//               "confidence":0.93}}
//
// Target keys appear only when known (pid set, strings non-empty). The breakdown always lists
// the thread-state causes (ids below ISO_THREAD_CAUSES) and any other cause with seconds > 0,
// sorted by seconds descending (ties by cause id). share = seconds / thread_seconds, 0 when
// nothing was measured. A `none` verdict reads {"layer":"none","cause":"none",...} and its share
// is the top blamable share. Names are those of shared/TAXONOMY.md.
//
// With network evidence (docs/network.md) the breakdown also lists the target's network causes,
// each with "slice" and "mechanism" keys; their time overlaps the threads' own time, so their
// share (of thread_seconds like every row) does not add up with the thread causes'. A "network"
// object then gives {"flows":N,"seconds":F,"retransmits":N,"drops":{"reason":N}}. "notes" (an
// array of strings, only when not empty) says what changed in the target during the interval (a
// pod's container restarted).
//
// Requests (spans joined while tracing, `isoscope trace --otlp-listen`) are separate objects, one
// per line: {"trace_id":"..","span_id":"..","duration_s":F,"binding":"thread",
// "breakdown":[...],"verdict":{...}} where the breakdown is one partition of the span (shares of
// its duration; network rows carry "slice" and "mechanism").
#pragma once

#include <nlohmann/json.hpp>

#include "common/result.hpp"
#include "correlator/breakdown.hpp"

namespace isoscope::exporters {

nlohmann::json TraceIntervalJson(const correlator::IntervalReport& report);
nlohmann::json TraceRequestJson(const correlator::RequestReport& request);

// The inverse of TraceIntervalJson. Fails with a message naming the offending key on a missing
// or mistyped field, an unknown cause name, a layer that does not match its cause, a cause
// listed twice, or an `app` cause as verdict. Shares in the breakdown are derived data and are
// not read back; start_ns/end_ns and target.cgroup_mode are not part of the schema and stay 0/
// empty.
Result<correlator::IntervalReport> ParseTraceIntervalJson(const nlohmann::json& json);

}  // namespace isoscope::exporters
