// Prometheus metrics of network evidence (docs/network.md), registered on an existing registry
// (the PrometheusExporter's, so one /metrics serves both):
//
//   isoscope_net_delay_seconds{cause,slice,mechanism,pod_uid,container_id,cgroup}  histogram of
//       single network intervals (100 us .. 10 s)
//   isoscope_net_retransmits_total{slice,pod_uid,container_id,cgroup}
//   isoscope_net_drops_total{reason}                 every drop the kernel reported, by reason
//   isoscope_net_workloads_overflow_total            observations folded into cgroup="other"
//
// Cardinality is bounded like PrometheusExporter: after max_workloads distinct workloads, further
// ones are folded into {cgroup="other",pod_uid="",container_id=""}, each folded observation counted
// in isoscope_net_workloads_overflow_total. The cause/slice/mechanism values are those of
// shared/TAXONOMY.md; drop reasons are whatever the caller names them (bounded by the kernel's
// enum).
//
// Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "collectors/network/net_evidence.hpp"
#include "correlator/breakdown.hpp"
#include "exporters/prometheus/workload_labels.hpp"
#include "isoscope/abi.hpp"

namespace isoscope::exporters {

class NetworkMetrics {
 public:
  explicit NetworkMetrics(std::shared_ptr<prometheus::Registry> registry,
                          std::size_t max_workloads = 256);
  NetworkMetrics(const NetworkMetrics&) = delete;
  NetworkMetrics& operator=(const NetworkMetrics&) = delete;

  // One network interval of `workload`: observed in the delay histogram, and a RETRANS also
  // counted as a retransmission. Drops (ISO_NET_EV_DROP) and causes outside the network layer are
  // ignored here (drops are counted by SetDrops).
  void OnInterval(const network::NetInterval& interval, const correlator::TargetInfo& workload);
  // One network delay; a cause outside the network layer or a negative or non-finite duration
  // is ignored.
  void OnDelay(abi::Cause cause, double seconds, const correlator::TargetInfo& workload);
  // One retransmission blamed on `slice` (enum iso_net_slice).
  void OnRetransmit(std::uint32_t slice, const correlator::TargetInfo& workload);
  // Cumulative drops by reason; counters advance by the growth since the previous call. A value
  // lower than the previous one means its source restarted and is added whole, so counters never
  // decrease.
  void SetDrops(const std::map<std::string, std::uint64_t>& cumulative);

 private:
  // Workload labels, folded past max_workloads (each fold counted). Requires mu_.
  prometheus::Labels WorkloadLabels(const correlator::TargetInfo& target);

  WorkloadFolder workloads_;  // guarded by mu_
  const std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Histogram>& delay_seconds_;
  prometheus::Family<prometheus::Counter>& retransmits_;
  prometheus::Family<prometheus::Counter>& drops_;
  prometheus::Counter& workloads_overflow_;

  std::mutex mu_;
  std::map<std::string, std::uint64_t> previous_drops_;  // guarded by mu_
};

}  // namespace isoscope::exporters
