// Prometheus metrics of isoscope: per-workload cause seconds, verdicts, delay histograms and the
// agent's own health (records received/lost, BPF program run time, probes up).
//
// Names and labels are fixed (listed in the .cpp with their help strings); the cause and layer
// label values are those of shared/TAXONOMY.md. Workload labels are pod_uid, container_id and
// cgroup. Cardinality is bounded: after max_workloads distinct workloads, further ones are folded
// into {cgroup="other",pod_uid="",container_id=""} and each folded interval report is counted in
// isoscope_workloads_overflow_total. prometheus-cpp 1.0 exposes names as registered, so counter
// names carry their `_total` suffix here.
//
// Thread-safe: the callbacks may run on the agent's thread while the exposer scrapes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "common/result.hpp"
#include "correlator/breakdown.hpp"
#include "exporters/prometheus/workload_labels.hpp"
#include "isoscope/abi.hpp"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace isoscope::exporters {

struct ProgramStat {
  std::string name;
  bool up = false;
  std::uint64_t run_ns = 0;
  std::uint64_t run_cnt = 0;
};

struct SelfStats {
  std::map<std::string, std::uint64_t> received_by_kind;  // cumulative: {"thread_totals": 10}
  std::map<std::string, std::uint64_t> lost_by_reason;    // cumulative: {"ringbuf_full": 0}
  std::vector<ProgramStat> programs;                      // cumulative run_ns/run_cnt (bpf_stats)
};

class PrometheusExporter {
 public:
  explicit PrometheusExporter(std::size_t max_workloads = 256);
  ~PrometheusExporter();
  PrometheusExporter(const PrometheusExporter&) = delete;
  PrometheusExporter& operator=(const PrometheusExporter&) = delete;

  // Serves /metrics on "host:port" (port 0 picks a free one). Fails, without throwing, when the
  // address cannot be bound or when already serving.
  Status Serve(const std::string& addr);
  // Ports the exposer listens on; empty before Serve.
  std::vector<int> ListeningPorts() const;

  // One report per workload (cgroup) for the interval.
  void OnInterval(const std::vector<correlator::IntervalReport>& reports);
  // One finished delay of a thread of `workload`; unknown causes and negative or non-finite
  // durations are ignored.
  void OnDelay(abi::Cause cause, double seconds, const correlator::TargetInfo& workload);
  // Cumulative values; the counters advance by the difference to the previous call. A value
  // lower than the previous one means its source restarted (e.g. programs reloaded) and is
  // added whole, so counters never decrease.
  void SetSelfStats(const SelfStats& stats);
  // Node-wide steal of one interval (docs/hypervisor.md): per CPU from the kernel's account,
  // and where the agent put it (source="threads" or "idle").
  void OnNodeSteal(const correlator::NodeStealSection& node,
                   const std::map<std::uint32_t, double>& kernel_per_cpu);

  // The text exposition format of everything registered.
  std::string Scrape() const;
  std::shared_ptr<prometheus::Registry> registry() const;  // NOLINT(readability-identifier-naming)

 private:
  // Advances `counter` by the growth of the cumulative `value` (remembered under `key`) times
  // `scale`. Requires mu_.
  void AdvanceCounter(prometheus::Counter& counter, const std::string& key, std::uint64_t value,
                      double scale = 1.0);

  WorkloadFolder workloads_;  // guarded by mu_
  const std::shared_ptr<prometheus::Registry> registry_;

  prometheus::Family<prometheus::Counter>& cause_seconds_;
  prometheus::Family<prometheus::Counter>& thread_seconds_;
  prometheus::Family<prometheus::Histogram>& delay_seconds_;
  prometheus::Family<prometheus::Counter>& verdicts_;
  prometheus::Family<prometheus::Counter>& vcpu_seconds_;
  prometheus::Family<prometheus::Counter>& vm_exits_;
  prometheus::Family<prometheus::Counter>& vm_exit_seconds_;
  prometheus::Family<prometheus::Counter>& cpu_steal_;
  prometheus::Family<prometheus::Counter>& steal_attributed_;
  prometheus::Family<prometheus::Counter>& records_received_;
  prometheus::Family<prometheus::Counter>& records_lost_;
  prometheus::Family<prometheus::Counter>& program_run_seconds_;
  prometheus::Family<prometheus::Counter>& program_runs_;
  prometheus::Family<prometheus::Gauge>& probe_up_;
  prometheus::Counter& workloads_overflow_;

  mutable std::mutex mu_;
  std::map<std::string, std::uint64_t> previous_;  // last cumulative self stats, by mu_

  // Last: stopped first on destruction, before the families it scrapes go away.
  std::unique_ptr<prometheus::Exposer> exposer_;  // guarded by mu_
};

}  // namespace isoscope::exporters
