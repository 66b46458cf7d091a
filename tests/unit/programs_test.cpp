// The program table and its planner, against a kernel described by a table.
#include "agent/programs.hpp"

#include <map>
#include <set>

#include <gtest/gtest.h>

#include "agent/features.hpp"

namespace isoscope {
namespace {

class FakeProber : public FeatureProber {
 public:
  std::map<Feature, FeatureStatus> features;
  std::set<std::string> missing_tracepoints;
  std::set<std::string> missing_functions;

  FeatureStatus Probe(Feature f) override {
    auto it = features.find(f);
    return it == features.end() ? FeatureStatus{true, ""} : it->second;
  }
  FeatureStatus HasTracepoint(std::string_view name) override {
    if (missing_tracepoints.count(std::string(name))) return {false, "no such tracepoint"};
    return {true, ""};
  }
  FeatureStatus HasFunction(std::string_view name) override {
    if (missing_functions.count(std::string(name))) return {false, "not in BTF"};
    return {true, ""};
  }
};

const ProgramDecision& Find(const std::vector<ProgramDecision>& plan, const std::string& name) {
  for (const auto& d : plan) {
    if (d.spec->name == name) return d;
  }
  ADD_FAILURE() << "no program " << name;
  static ProgramDecision none;
  return none;
}

TEST(ProgramTable, EveryGroupHasExactlyOneKindPerAlternative) {
  // An alternative: one attach point (tracepoint or function) of the group.
  std::map<std::pair<std::string, std::string>, std::set<ProgKind>> kinds;
  for (const auto& p : ContainerPrograms()) {
    auto& alternative = kinds[std::make_pair(p.group, p.target)];
    EXPECT_TRUE(alternative.insert(p.kind).second) << p.name;
    EXPECT_FALSE(p.purpose.empty()) << p.name;
  }
  EXPECT_TRUE(
      kinds.count(std::make_pair(std::string("sched_switch"), std::string("sched_switch"))));
  EXPECT_TRUE(
      kinds.count(std::make_pair(std::string("unthrottle"), std::string("unthrottle_cfs_rq"))));
}

TEST(PlanPrograms, FullKernelPrefersTpBtfAndFentry) {
  FakeProber k;
  auto plan = PlanPrograms(ContainerPrograms(), k);
  EXPECT_TRUE(Find(plan, "iso_sched_switch_btf").enabled);
  EXPECT_FALSE(Find(plan, "iso_sched_switch_raw").enabled);
  EXPECT_TRUE(Find(plan, "iso_unthrottle_fentry").enabled);
  EXPECT_FALSE(Find(plan, "iso_unthrottle_kprobe").enabled);
  EXPECT_TRUE(MissingRequiredGroups(plan).empty());
}

TEST(PlanPrograms, ThisMachineShapeFallsBackWithReasons) {
  // As on the 6.18 test VM: no kprobes, fentry fails to load.
  FakeProber k;
  k.features[Feature::kFentry] = {false, "fentry program load failed: Operation not permitted"};
  k.features[Feature::kKprobe] = {false, "kernel has no kprobe PMU"};
  auto plan = PlanPrograms(ContainerPrograms(), k);
  EXPECT_TRUE(Find(plan, "iso_sched_switch_btf").enabled);
  const auto& fentry = Find(plan, "iso_unthrottle_fentry");
  EXPECT_FALSE(fentry.enabled);
  EXPECT_NE(fentry.reason.find("Operation not permitted"), std::string::npos);
  EXPECT_NE(Find(plan, "iso_unthrottle_kprobe").reason.find("kprobe PMU"), std::string::npos);
  EXPECT_TRUE(MissingRequiredGroups(plan).empty());  // unthrottle is optional
}

TEST(PlanPrograms, NoBtfTracepointsUsesRawTpAndMissingFunctionDisablesKprobe) {
  FakeProber k;
  k.features[Feature::kTpBtf] = {false, "tp_btf program load failed"};
  k.features[Feature::kFentry] = {false, "no trampolines"};
  k.missing_functions.insert("unthrottle_cfs_rq");
  auto plan = PlanPrograms(ContainerPrograms(), k);
  EXPECT_FALSE(Find(plan, "iso_sched_switch_btf").enabled);
  EXPECT_TRUE(Find(plan, "iso_sched_switch_raw").enabled);
  EXPECT_TRUE(Find(plan, "iso_memcg_reclaim_end_raw").enabled);
  EXPECT_EQ(Find(plan, "iso_unthrottle_kprobe").reason, "not in BTF");
}

TEST(PlanPrograms, MissingRequiredTracepointIsReported) {
  FakeProber k;
  k.missing_tracepoints.insert("sched_wakeup_new");
  k.missing_tracepoints.insert("mm_vmscan_memcg_reclaim_begin");
  auto plan = PlanPrograms(ContainerPrograms(), k);
  auto missing = MissingRequiredGroups(plan);
  ASSERT_EQ(missing.size(), 1u);  // the reclaim hook is optional
  EXPECT_EQ(missing[0], "sched_wakeup_new");
}

TEST(ProgramTable, NetworkProgramsAreOptionalTpBtfWithRawTpFallback) {
  std::map<std::string, std::set<ProgKind>> kinds;
  for (const auto& p : ContainerPrograms()) {
    if (p.area != "network") continue;
    EXPECT_TRUE(p.optional) << p.name << ": the network must never keep the agent from starting";
    // One group has two tracepoints: qdisc_enqueue, with net_dev_queue as its fallback.
    if (p.group != "qdisc_enqueue") {
      EXPECT_EQ(p.group, p.target) << p.name;
    }
    kinds[p.target].insert(p.kind);
  }
  for (const char* tp :
       {"qdisc_enqueue", "net_dev_queue", "qdisc_dequeue", "net_dev_start_xmit",
        "netif_receive_skb", "tcp_probe", "tcp_retransmit_skb", "kfree_skb", "consume_skb"}) {
    ASSERT_TRUE(kinds.count(tp)) << tp;
    EXPECT_EQ(kinds[tp], (std::set<ProgKind>{ProgKind::kTpBtf, ProgKind::kRawTp})) << tp;
  }
}

TEST(ProgramTable, OutboundTraceparentProgramsAreOptionalSyscallTracepoints) {
  for (const char* name : {"iso_write_exit", "iso_writev_exit", "iso_sendto_exit", "iso_sendmsg_exit"}) {
    bool found = false;
    for (const auto& p : ContainerPrograms()) {
      if (p.name != name) continue;
      found = true;
      EXPECT_EQ(p.kind, ProgKind::kTracepoint);
      EXPECT_EQ(p.area, "requests");
      EXPECT_TRUE(p.optional);
      EXPECT_EQ(p.target.rfind("syscalls/sys_exit_", 0), 0u) << p.target;
    }
    EXPECT_TRUE(found) << name;
  }
}

TEST(PlanPrograms, KernelWithoutNetworkTracepointsStillPlansTheContainerLayer) {
  FakeProber k;
  for (const char* tp :
       {"qdisc_enqueue", "net_dev_queue", "qdisc_dequeue", "net_dev_start_xmit",
        "netif_receive_skb", "tcp_probe", "tcp_retransmit_skb", "kfree_skb", "consume_skb"}) {
    k.missing_tracepoints.insert(tp);
  }
  auto plan = PlanPrograms(ContainerPrograms(), k);
  EXPECT_TRUE(MissingRequiredGroups(plan).empty());
  EXPECT_FALSE(Find(plan, "iso_net_kfree_skb_btf").enabled);
  EXPECT_FALSE(Find(plan, "iso_net_kfree_skb_raw").enabled);
  EXPECT_EQ(Find(plan, "iso_net_tcp_probe_raw").reason, "no such tracepoint");
  EXPECT_TRUE(Find(plan, "iso_sched_switch_btf").enabled);
}

TEST(PlanPrograms, QdiscTimingFallsBackToNetDevQueue) {
  // v6.18 here: qdisc_enqueue exists, net_dev_queue is not loaded.
  FakeProber now;
  auto plan = PlanPrograms(ContainerPrograms(), now);
  EXPECT_TRUE(Find(plan, "iso_net_qdisc_enqueue_btf").enabled);
  EXPECT_FALSE(Find(plan, "iso_net_dev_queue_btf").enabled);
  EXPECT_EQ(Find(plan, "iso_net_dev_queue_btf").reason,
            "alternative of an enabled qdisc_enqueue program");
  // v5.8-v5.14: no qdisc_enqueue tracepoint, net_dev_queue stands in.
  FakeProber old;
  old.missing_tracepoints.insert("qdisc_enqueue");
  plan = PlanPrograms(ContainerPrograms(), old);
  EXPECT_FALSE(Find(plan, "iso_net_qdisc_enqueue_btf").enabled);
  EXPECT_TRUE(Find(plan, "iso_net_dev_queue_btf").enabled);
  EXPECT_TRUE(Find(plan, "iso_net_qdisc_dequeue_btf").enabled);
}

TEST(PlanPrograms, NetworkFallsBackToRawTp) {
  FakeProber k;
  k.features[Feature::kTpBtf] = {false, "tp_btf program load failed"};
  auto plan = PlanPrograms(ContainerPrograms(), k);
  EXPECT_FALSE(Find(plan, "iso_net_start_xmit_btf").enabled);
  EXPECT_TRUE(Find(plan, "iso_net_start_xmit_raw").enabled);
  EXPECT_TRUE(Find(plan, "iso_net_kfree_skb_raw").enabled);
}

}  // namespace
}  // namespace isoscope
