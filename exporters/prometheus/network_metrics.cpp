#include "exporters/prometheus/network_metrics.hpp"

#include <cmath>
#include <string_view>
#include <utility>

#include "collectors/network/slices.hpp"

namespace isoscope::exporters {
namespace {


const prometheus::Histogram::BucketBoundaries& NetDelayBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
  return kBuckets;
}

}  // namespace

NetworkMetrics::NetworkMetrics(std::shared_ptr<prometheus::Registry> registry,
                               std::size_t max_workloads)
    : workloads_(max_workloads),
      registry_(std::move(registry)),
      delay_seconds_(prometheus::BuildHistogram()
                         .Name("isoscope_net_delay_seconds")
                         .Help("Length of single network intervals (a packet's or a socket's data "
                               "wait in one stage on this node), by network cause.")
                         .Register(*registry_)),
      retransmits_(prometheus::BuildCounter()
                       .Name("isoscope_net_retransmits_total")
                       .Help("TCP retransmissions of a workload's sockets, by the slice blamed "
                             "(the slice of a drop on this node, else remote).")
                       .Register(*registry_)),
      drops_(prometheus::BuildCounter()
                 .Name("isoscope_net_drops_total")
                 .Help("Packets dropped on this node, by kernel drop reason.")
                 .Register(*registry_)),
      workloads_overflow_(prometheus::BuildCounter()
                              .Name("isoscope_net_workloads_overflow_total")
                              .Help("Network observations folded into the cgroup=\"other\" series "
                                    "because the workload limit was reached.")
                              .Register(*registry_)
                              .Add({})) {}

void NetworkMetrics::OnDelay(abi::Cause cause, double seconds,
                             const correlator::TargetInfo& workload) {
  if (abi::CauseName(cause).empty() || abi::CauseLayer(cause) != abi::Layer::kNetwork) return;
  if (!std::isfinite(seconds) || seconds < 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  prometheus::Labels labels = WorkloadLabels(workload);
  labels.emplace("cause", abi::CauseName(cause));
  labels.emplace("slice", network::SliceName(network::CauseSliceOf(cause)));
  labels.emplace("mechanism", network::MechanismName(network::CauseMechanismOf(cause)));
  delay_seconds_.Add(labels, NetDelayBuckets()).Observe(seconds);
}

void NetworkMetrics::OnRetransmit(std::uint32_t slice, const correlator::TargetInfo& workload) {
  const std::string_view name = network::SliceName(slice);
  if (name.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  prometheus::Labels labels = WorkloadLabels(workload);
  labels.emplace("slice", name);
  retransmits_.Add(labels).Increment();
}

prometheus::Labels NetworkMetrics::WorkloadLabels(const correlator::TargetInfo& target) {
  bool folded = false;
  prometheus::Labels labels = workloads_.Labels(target, &folded);
  if (folded) workloads_overflow_.Increment();
  return labels;
}

void NetworkMetrics::OnInterval(const network::NetInterval& interval,
                                const correlator::TargetInfo& workload) {
  if (interval.event == ISO_NET_EV_DROP || interval.end_ns < interval.start_ns) return;
  OnDelay(interval.cause, static_cast<double>(interval.end_ns - interval.start_ns) / 1e9, workload);
  if (interval.event == ISO_NET_EV_RETRANS) {
    OnRetransmit(network::CauseSliceOf(interval.cause), workload);
  }
}

void NetworkMetrics::SetDrops(const std::map<std::string, std::uint64_t>& cumulative) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [reason, value] : cumulative) {
    auto [it, inserted] = previous_drops_.try_emplace(reason, 0);
    const std::uint64_t delta = value >= it->second ? value - it->second : value;
    it->second = value;
    auto& counter = drops_.Add({{"reason", reason}});
    if (delta > 0) counter.Increment(static_cast<double>(delta));
  }
}

}  // namespace isoscope::exporters
