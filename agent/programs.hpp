// The program table: every BPF program isoscope ships, what it needs from the
// kernel, and which alternatives stand in for it. Data, not code: the loader
// turns it into autoload switches and `doctor` prints it.
#pragma once

#include <string>
#include <vector>

#include "agent/features.hpp"
#include "isoscope/abi.hpp"

namespace isoscope {

enum class ProgKind { kTpBtf, kRawTp, kTracepoint, kFentry, kKprobe };
std::string_view ProgKindName(ProgKind kind);
Feature ProgKindFeature(ProgKind kind);

struct ProgramSpec {
  std::string name;     // program name in the BPF object
  std::string group;    // alternatives share a group; the first usable one in table order wins
  std::string target;   // tracepoint (tp_btf/raw_tp) or kernel function (fentry/kprobe)
  ProgKind kind;
  std::string area;     // "container", "requests" (trace-context binding), "network", "paravirt"
                        // (block requests) or "hypervisor" (vCPU threads)
  bool optional;        // the layer works (with less precision) without this group
  std::string purpose;  // one line for `doctor`
};

// All programs of the BPF object, in order of preference within a group.
const std::vector<ProgramSpec>& ContainerPrograms();

struct ProgramDecision {
  const ProgramSpec* spec = nullptr;
  bool enabled = false;
  std::string reason;  // why disabled, or which alternative was preferred
};

// Picks, for each group, the first program whose kernel needs are met; the
// others are disabled with a reason. Pure function of the table and prober.
std::vector<ProgramDecision> PlanPrograms(const std::vector<ProgramSpec>& table,
                                          FeatureProber& prober);

// Groups without an enabled program, among the non-optional ones: the layer
// cannot work when this is non-empty.
std::vector<std::string> MissingRequiredGroups(const std::vector<ProgramDecision>& plan);

}  // namespace isoscope
