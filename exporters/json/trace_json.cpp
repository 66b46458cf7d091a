#include "exporters/json/trace_json.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace isoscope::exporters {
namespace {

using nlohmann::json;

constexpr std::string_view kNone = "none";

// Thread-state causes always, others when measured; seconds descending, ties by id.
std::vector<abi::Cause> BreakdownCauses(const correlator::Breakdown& breakdown) {
  std::vector<abi::Cause> causes;
  for (abi::Cause c = 0; c < ISO_CAUSE_MAX; ++c) {
    if (c < ISO_THREAD_CAUSES || breakdown.seconds[c] > 0) causes.push_back(c);
  }
  std::stable_sort(causes.begin(), causes.end(), [&](abi::Cause a, abi::Cause b) {
    return breakdown.seconds[a] > breakdown.seconds[b];
  });
  return causes;
}

// One breakdown entry; network causes name their slice and mechanism.
json CauseEntry(abi::Cause c, double seconds, double share) {
  json entry = {{"layer", abi::LayerName(abi::CauseLayer(c))},
                {"cause", abi::CauseName(c)},
                {"seconds", seconds},
                {"share", share}};
  if (abi::CauseLayer(c) == abi::Layer::kNetwork) {
    const std::string name(abi::CauseName(c));  // network.<slice>.<mechanism>
    const auto dot = name.rfind('.');
    entry["slice"] = abi::CauseSlice(c);
    entry["mechanism"] = name.substr(dot + 1);
  }
  return entry;
}

json BreakdownJson(const correlator::Breakdown& b) {
  json breakdown = json::array();
  for (const abi::Cause c : BreakdownCauses(b)) breakdown.push_back(CauseEntry(c, b.seconds[c], b.Share(c)));
  return breakdown;
}

json VerdictJson(const correlator::Verdict& v) {
  json verdict = json::object();
  if (v.cause) {
    verdict["layer"] = abi::LayerName(abi::CauseLayer(*v.cause));
    verdict["cause"] = abi::CauseName(*v.cause);
  } else {
    verdict["layer"] = kNone;
    verdict["cause"] = kNone;
  }
  verdict["share"] = v.share;
  verdict["confidence"] = v.confidence;
  return verdict;
}

// Looks up `key` in `object`; an error names the key under `where`.
Result<const json*> Field(const json& object, std::string_view where, std::string_view key) {
  const auto it = object.find(key);
  if (it == object.end()) return MakeError("{}: missing key \"{}\"", where, key);
  return &*it;
}

Result<double> NumberField(const json& object, std::string_view where, std::string_view key) {
  auto field = Field(object, where, key);
  if (!field) return field.error();
  if (!(*field)->is_number()) {
    return MakeError("{}: \"{}\" must be a number, got {}", where, key, (*field)->type_name());
  }
  return (*field)->get<double>();
}

Result<std::string> OptionalString(const json& object, std::string_view where,
                                   std::string_view key) {
  const auto it = object.find(key);
  if (it == object.end()) return std::string();
  if (!it->is_string()) {
    return MakeError("{}: \"{}\" must be a string, got {}", where, key, it->type_name());
  }
  return it->get<std::string>();
}

Result<correlator::TargetInfo> ParseTarget(const json& object) {
  constexpr std::string_view kWhere = "target";
  if (!object.is_object()) return MakeError("\"target\" must be an object");
  correlator::TargetInfo target;
  if (const auto pid = object.find("pid"); pid != object.end()) {
    if (!pid->is_number_integer()) return MakeError("target: \"pid\" must be an integer");
    const auto value = pid->get<std::int64_t>();
    if (value < 0 || value > std::numeric_limits<std::int32_t>::max()) {
      return MakeError("target: \"pid\" {} is out of range", value);
    }
    target.pid = static_cast<std::int32_t>(value);
  }
  struct StringKey {
    std::string_view key;
    std::string* out;
  };
  for (const StringKey& k :
       {StringKey{"cgroup", &target.cgroup}, StringKey{"pod_uid", &target.pod_uid},
        StringKey{"container_id", &target.container_id}, StringKey{"comm", &target.comm},
        StringKey{"namespace", &target.namespace_name}, StringKey{"pod", &target.pod_name},
        StringKey{"container", &target.container_name}, StringKey{"sandbox", &target.sandbox}}) {
    auto value = OptionalString(object, kWhere, k.key);
    if (!value) return value.error();
    *k.out = std::move(value.value());
  }
  return target;
}

Result<abi::Cause> ParseCause(const json& object, std::string_view where) {
  auto cause_field = Field(object, where, "cause");
  if (!cause_field) return cause_field.error();
  if (!(*cause_field)->is_string()) return MakeError("{}: \"cause\" must be a string", where);
  const auto& name = (*cause_field)->get_ref<const std::string&>();
  const auto cause = abi::CauseFromName(name);
  if (!cause) return MakeError("{}: unknown cause \"{}\"", where, name);
  if (const auto layer = object.find("layer"); layer != object.end()) {
    const std::string_view want = abi::LayerName(abi::CauseLayer(*cause));
    if (!layer->is_string() || layer->get_ref<const std::string&>() != want) {
      return MakeError("{}: layer {} does not match cause \"{}\" (layer \"{}\")", where,
                       layer->dump(), name, want);
    }
  }
  return *cause;
}

// Network rows go to `network` when the interval had a network section (a "network" object),
// else they are ordinary breakdown causes.
Status ParseBreakdown(const json& array, correlator::Breakdown& breakdown,
                      correlator::NetworkSection* network) {
  if (!array.is_array()) return MakeError("\"breakdown\" must be an array");
  std::set<abi::Cause> seen;
  for (std::size_t i = 0; i < array.size(); ++i) {
    const std::string where = fmt::format("breakdown[{}]", i);
    const json& entry = array[i];
    if (!entry.is_object()) return MakeError("{}: must be an object", where);
    auto cause = ParseCause(entry, where);
    if (!cause) return cause.error();
    if (!seen.insert(*cause).second) {
      return MakeError("{}: cause \"{}\" is listed twice", where, abi::CauseName(*cause));
    }
    auto seconds = NumberField(entry, where, "seconds");
    if (!seconds) return seconds.error();
    if (*seconds < 0) return MakeError("{}: \"seconds\" must not be negative", where);
    if (entry.contains("slice")) {
      if (abi::CauseLayer(*cause) != abi::Layer::kNetwork ||
          !entry["slice"].is_string() || entry["slice"].get<std::string>() != abi::CauseSlice(*cause)) {
        return MakeError("{}: \"slice\" {} does not match cause \"{}\"", where,
                         entry["slice"].dump(), abi::CauseName(*cause));
      }
      if (network) {  // a row of the interval's network section, beside the thread breakdown
        network->rows.push_back({*cause, *seconds, 0});
        network->total_seconds += *seconds;
        continue;
      }
    }
    breakdown.seconds[*cause] = *seconds;
  }
  if (network) {
    for (auto& row : network->rows) {
      row.share = network->total_seconds > 0 ? row.seconds / network->total_seconds : 0;
    }
  }
  return {};
}

Result<correlator::Verdict> ParseVerdict(const json& object) {
  constexpr std::string_view kWhere = "verdict";
  if (!object.is_object()) return MakeError("\"verdict\" must be an object");
  correlator::Verdict verdict;
  auto cause_field = Field(object, kWhere, "cause");
  if (!cause_field) return cause_field.error();
  if ((*cause_field)->is_string() && (*cause_field)->get_ref<const std::string&>() == kNone) {
    const auto layer = object.find("layer");
    if (layer != object.end() &&
        (!layer->is_string() || layer->get_ref<const std::string&>() != kNone)) {
      return MakeError("verdict: layer {} does not match cause \"none\"", layer->dump());
    }
  } else {
    auto cause = ParseCause(object, kWhere);
    if (!cause) return cause.error();
    if (!abi::Blamable(*cause)) {
      return MakeError("verdict: cause \"{}\" is in the app layer, which a verdict never blames",
                       abi::CauseName(*cause));
    }
    verdict.cause = *cause;
  }
  auto share = NumberField(object, kWhere, "share");
  if (!share) return share.error();
  auto confidence = NumberField(object, kWhere, "confidence");
  if (!confidence) return confidence.error();
  verdict.share = *share;
  verdict.confidence = *confidence;
  return verdict;
}

json VcpuTimesJson(const correlator::VcpuTimes& t) {
  return {{"guest_s", t.guest_s},   {"vmexit_s", t.vmexit_s}, {"vmm_exit_s", t.vmm_exit_s},
          {"halted_s", t.halted_s}, {"steal_s", t.steal_s},   {"exits", t.exits}};
}

json VcpusJson(const correlator::VcpuSection& v) {
  json out = VcpuTimesJson(v.total);
  out["threads"] = v.threads;
  json exits = json::array();
  for (const auto& e : v.exits) {
    exits.push_back({{"reason", e.reason},
                     {"kind", e.kind},
                     {"isa", e.isa},
                     {"count", e.count},
                     {"seconds", e.seconds}});
  }
  out["exits"] = std::move(exits);
  json per_thread = json::array();
  for (const auto& t : v.per_thread) {
    json row = VcpuTimesJson(t.times);
    row["tid"] = t.tid;
    row["comm"] = t.comm;
    per_thread.push_back(std::move(row));
  }
  out["per_thread"] = std::move(per_thread);
  return out;
}

}  // namespace

json TraceIntervalJson(const correlator::IntervalReport& report) {
  const correlator::TargetInfo& t = report.target;
  json target = json::object();
  if (t.pid) target["pid"] = *t.pid;
  if (!t.cgroup.empty()) target["cgroup"] = t.cgroup;
  if (!t.pod_uid.empty()) target["pod_uid"] = t.pod_uid;
  if (!t.container_id.empty()) target["container_id"] = t.container_id;
  if (!t.comm.empty()) target["comm"] = t.comm;
  if (!t.namespace_name.empty()) target["namespace"] = t.namespace_name;
  if (!t.pod_name.empty()) target["pod"] = t.pod_name;
  if (!t.container_name.empty()) target["container"] = t.container_name;
  if (!t.sandbox.empty()) target["sandbox"] = t.sandbox;

  const correlator::Breakdown& b = report.breakdown;
  json breakdown = BreakdownJson(b);
  const correlator::NetworkSection& n = report.network;
  for (const auto& row : n.rows) {
    breakdown.push_back(CauseEntry(row.cause, row.seconds,
                                   b.thread_seconds > 0 ? row.seconds / b.thread_seconds : 0.0));
  }
  json verdict = VerdictJson(report.verdict);

  json out = json::object();
  out["target"] = std::move(target);
  out["interval_s"] = b.interval_s;
  out["thread_seconds"] = b.thread_seconds;
  out["threads"] = b.threads;
  out["breakdown"] = std::move(breakdown);
  out["verdict"] = std::move(verdict);
  if (n.measured) {
    out["network"] = {{"flows", n.flows},
                      {"seconds", n.total_seconds},
                      {"retransmits", n.retransmits},
                      {"retransmits_spurious", n.retransmits_spurious},
                      {"drops", n.drops}};
  }
  if (report.vcpus.threads > 0) out["vcpus"] = VcpusJson(report.vcpus);
  if (report.node.measured) {
    out["node"] = {{"steal_s", report.node.kernel_s},
                   {"steal_threads_s", report.node.threads_s},
                   {"steal_idle_s", report.node.idle_s}};
  }
  if (!report.notes.empty()) out["notes"] = report.notes;
  return out;
}

json TraceRequestJson(const correlator::RequestReport& request) {
  json out = json::object();
  out["trace_id"] = request.trace_id;
  out["span_id"] = request.span_id;
  out["duration_s"] = request.breakdown.interval_s;
  out["binding"] = request.binding;
  out["breakdown"] = BreakdownJson(request.breakdown);
  out["verdict"] = VerdictJson(request.verdict);
  return out;
}

Result<correlator::IntervalReport> ParseTraceIntervalJson(const json& object) {
  constexpr std::string_view kWhere = "trace interval";
  if (!object.is_object()) {
    return MakeError("{}: expected a JSON object, got {}", kWhere, object.type_name());
  }
  correlator::IntervalReport report;

  auto target_field = Field(object, kWhere, "target");
  if (!target_field) return target_field.error();
  auto target = ParseTarget(**target_field);
  if (!target) return target.error();
  report.target = std::move(target.value());

  auto interval = NumberField(object, kWhere, "interval_s");
  if (!interval) return interval.error();
  auto thread_seconds = NumberField(object, kWhere, "thread_seconds");
  if (!thread_seconds) return thread_seconds.error();
  auto threads_field = Field(object, kWhere, "threads");
  if (!threads_field) return threads_field.error();
  const json& threads = **threads_field;
  if (!threads.is_number_unsigned() ||
      threads.get<std::uint64_t>() > std::numeric_limits<std::uint32_t>::max()) {
    return MakeError("{}: \"threads\" must be a non-negative 32-bit integer, got {}", kWhere,
                     threads.dump());
  }
  report.breakdown.interval_s = *interval;
  report.breakdown.thread_seconds = *thread_seconds;
  report.breakdown.threads = threads.get<std::uint32_t>();

  auto breakdown_field = Field(object, kWhere, "breakdown");
  if (!breakdown_field) return breakdown_field.error();
  const auto network = object.find("network");
  correlator::NetworkSection* section = nullptr;
  if (network != object.end()) {
    if (!network->is_object()) return MakeError("{}: \"network\" must be an object", kWhere);
    section = &report.network;
    section->measured = true;
    if (auto flows = NumberField(*network, "network", "flows"); flows) {
      section->flows = static_cast<std::size_t>(*flows);
    }
    if (auto retrans = NumberField(*network, "network", "retransmits"); retrans) {
      section->retransmits = static_cast<std::uint64_t>(*retrans);
    }
    if (network->contains("retransmits_spurious")) {
      if (auto spurious = NumberField(*network, "network", "retransmits_spurious"); spurious) {
        section->retransmits_spurious = static_cast<std::uint64_t>(*spurious);
      }
    }
    if (const auto drops = network->find("drops"); drops != network->end() && drops->is_object()) {
      for (const auto& [reason, count] : drops->items()) {
        if (count.is_number_unsigned()) section->drops[reason] = count.get<std::uint64_t>();
      }
    }
  }
  if (Status s = ParseBreakdown(**breakdown_field, report.breakdown, section); !s) {
    return s.error();
  }

  auto verdict_field = Field(object, kWhere, "verdict");
  if (!verdict_field) return verdict_field.error();
  auto verdict = ParseVerdict(**verdict_field);
  if (!verdict) return verdict.error();
  report.verdict = *verdict;
  if (const auto notes = object.find("notes"); notes != object.end()) {
    if (!notes->is_array()) return MakeError("{}: \"notes\" must be an array", kWhere);
    for (const auto& note : *notes) {
      if (!note.is_string()) return MakeError("{}: \"notes\" must hold strings", kWhere);
      report.notes.push_back(note.get<std::string>());
    }
  }
  return report;
}

}  // namespace isoscope::exporters
