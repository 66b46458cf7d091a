#include "exporters/prometheus/prometheus_exporter.hpp"

#include <cmath>
#include <exception>
#include <string_view>
#include <utility>

#include <prometheus/exposer.h>
#include <prometheus/text_serializer.h>

namespace isoscope::exporters {
namespace {

constexpr std::string_view kNone = "none";

const prometheus::Histogram::BucketBoundaries& DelayBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5};
  return kBuckets;
}

prometheus::Family<prometheus::Counter>& CounterFamily(prometheus::Registry& registry,
                                                       const std::string& name,
                                                       const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry);
}

}  // namespace

PrometheusExporter::PrometheusExporter(std::size_t max_workloads)
    : workloads_(max_workloads),
      registry_(std::make_shared<prometheus::Registry>()),
      cause_seconds_(CounterFamily(
          *registry_, "isoscope_cause_seconds_total",
          "Thread-seconds spent per cause (shared/TAXONOMY.md) by the threads of a workload.")),
      thread_seconds_(CounterFamily(*registry_, "isoscope_thread_seconds_total",
                                    "Thread-seconds measured for a workload, over all causes.")),
      delay_seconds_(prometheus::BuildHistogram()
                         .Name("isoscope_delay_seconds")
                         .Help("Length of single off-CPU or stalled intervals of a workload's "
                               "threads, by cause.")
                         .Register(*registry_)),
      verdicts_(CounterFamily(*registry_, "isoscope_verdicts_total",
                              "Interval verdicts by blamed layer and cause (\"none\" when no "
                              "isolation cause dominated).")),
      vcpu_seconds_(CounterFamily(
          *registry_, "isoscope_vcpu_seconds_total",
          "Wall seconds of a workload's vCPU threads by state: guest, vmexit (the kernel "
          "handling exits), vmm_exit (the VMM handling exits), halted, steal (runnable, not "
          "running).")),
      vm_exits_(CounterFamily(*registry_, "isoscope_vm_exits_total",
                              "VM exits of a workload's vCPU threads by reason and kind (kernel: "
                              "kvm_exit; vmm: handed to the VMM).")),
      vm_exit_seconds_(CounterFamily(*registry_, "isoscope_vm_exit_seconds_total",
                                     "Seconds until VM exits were handled, by reason and kind.")),
      cpu_steal_(CounterFamily(*registry_, "isoscope_cpu_steal_seconds_total",
                               "Steal time of each CPU of the node (the kernel's /proc/stat).")),
      steal_attributed_(CounterFamily(*registry_, "isoscope_steal_attributed_seconds_total",
                                      "Node steal as isoscope attributed it: to threads "
                                      "(hypervisor.steal) or to idle CPUs.")),
      records_received_(CounterFamily(*registry_, "isoscope_records_received_total",
                                      "Records received from the BPF programs, by kind.")),
      records_lost_(
          CounterFamily(*registry_, "isoscope_records_lost_total",
                        "Records or threads lost before user space saw them, by reason.")),
      program_run_seconds_(CounterFamily(*registry_, "isoscope_bpf_program_run_seconds_total",
                                         "Time spent running each BPF program (bpf_stats).")),
      program_runs_(CounterFamily(*registry_, "isoscope_bpf_program_runs_total",
                                  "Runs of each BPF program (bpf_stats).")),
      probe_up_(prometheus::BuildGauge()
                    .Name("isoscope_probe_up")
                    .Help("1 when the BPF program is loaded and attached, else 0.")
                    .Register(*registry_)),
      workloads_overflow_(CounterFamily(*registry_, "isoscope_workloads_overflow_total",
                                        "Interval reports folded into the cgroup=\"other\" series "
                                        "because the workload limit was reached.")
                              .Add({})) {}

PrometheusExporter::~PrometheusExporter() = default;

Status PrometheusExporter::Serve(const std::string& addr) {
  std::lock_guard<std::mutex> lock(mu_);
  if (exposer_) return MakeError("metrics are already served; cannot serve on {} too", addr);
  if (addr.empty() || addr.find(',') != std::string::npos) {
    return MakeError("invalid metrics address \"{}\": expected host:port", addr);
  }
  try {
    auto exposer = std::make_unique<prometheus::Exposer>(addr);
    exposer->RegisterCollectable(registry_);
    exposer_ = std::move(exposer);
  } catch (const std::exception& e) {
    return MakeError("cannot serve metrics on {}: {}", addr, e.what());
  }
  return {};
}

std::vector<int> PrometheusExporter::ListeningPorts() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!exposer_) return {};
  return exposer_->GetListeningPorts();
}

void PrometheusExporter::OnInterval(const std::vector<correlator::IntervalReport>& reports) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const correlator::IntervalReport& report : reports) {
    bool folded = false;
    const prometheus::Labels workload = workloads_.Labels(report.target, &folded);
    if (folded) workloads_overflow_.Increment();

    const correlator::Breakdown& b = report.breakdown;
    for (abi::Cause c = 0; c < ISO_CAUSE_MAX; ++c) {
      if (!(b.seconds[c] > 0) || !std::isfinite(b.seconds[c])) continue;
      prometheus::Labels labels = workload;
      labels.emplace("cause", abi::CauseName(c));
      labels.emplace("layer", abi::LayerName(abi::CauseLayer(c)));
      cause_seconds_.Add(labels).Increment(b.seconds[c]);
    }
    auto& thread_seconds = thread_seconds_.Add(workload);
    if (b.thread_seconds > 0 && std::isfinite(b.thread_seconds)) {
      thread_seconds.Increment(b.thread_seconds);
    }

    if (report.vcpus.threads > 0) {
      const correlator::VcpuTimes& v = report.vcpus.total;
      for (const auto& [state, seconds] :
           {std::pair<const char*, double>{"guest", v.guest_s}, {"vmexit", v.vmexit_s},
            {"vmm_exit", v.vmm_exit_s}, {"halted", v.halted_s}, {"steal", v.steal_s}}) {
        if (!(seconds > 0) || !std::isfinite(seconds)) continue;
        prometheus::Labels labels = workload;
        labels.emplace("state", state);
        vcpu_seconds_.Add(labels).Increment(seconds);
      }
      for (const correlator::VmExitRow& e : report.vcpus.exits) {
        prometheus::Labels labels = workload;
        labels.emplace("reason", e.reason);
        labels.emplace("kind", e.kind);
        vm_exits_.Add(labels).Increment(static_cast<double>(e.count));
        if (e.seconds > 0 && std::isfinite(e.seconds)) vm_exit_seconds_.Add(labels).Increment(e.seconds);
      }
    }

    const auto& cause = report.verdict.cause;
    if (cause && !abi::CauseName(*cause).empty()) {
      verdicts_
          .Add({{"layer", std::string(abi::LayerName(abi::CauseLayer(*cause)))},
                {"cause", std::string(abi::CauseName(*cause))}})
          .Increment();
    } else {
      verdicts_.Add({{"layer", std::string(kNone)}, {"cause", std::string(kNone)}}).Increment();
    }
  }
}

void PrometheusExporter::OnNodeSteal(const correlator::NodeStealSection& node,
                                     const std::map<std::uint32_t, double>& kernel_per_cpu) {
  if (!node.measured) return;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [cpu, seconds] : kernel_per_cpu) {
    auto& c = cpu_steal_.Add({{"cpu", std::to_string(cpu)}});
    if (seconds > 0 && std::isfinite(seconds)) c.Increment(seconds);
  }
  for (const auto& [source, seconds] :
       {std::pair<const char*, double>{"threads", node.threads_s}, {"idle", node.idle_s}}) {
    auto& c = steal_attributed_.Add({{"source", source}});
    if (seconds > 0 && std::isfinite(seconds)) c.Increment(seconds);
  }
}

void PrometheusExporter::OnDelay(abi::Cause cause, double seconds,
                                 const correlator::TargetInfo& workload) {
  const std::string_view name = abi::CauseName(cause);
  if (name.empty() || !std::isfinite(seconds) || seconds < 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  bool folded = false;
  prometheus::Labels labels = workloads_.Labels(workload, &folded);
  labels.emplace("cause", name);
  delay_seconds_.Add(labels, DelayBuckets()).Observe(seconds);
}

void PrometheusExporter::AdvanceCounter(prometheus::Counter& counter, const std::string& key,
                                        std::uint64_t value, double scale) {
  auto [it, inserted] = previous_.try_emplace(key, 0);
  // Lower than last time: the source restarted from zero, so all of `value` is new.
  const std::uint64_t delta = value >= it->second ? value - it->second : value;
  it->second = value;
  if (delta > 0) counter.Increment(static_cast<double>(delta) * scale);
}

void PrometheusExporter::SetSelfStats(const SelfStats& stats) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [kind, value] : stats.received_by_kind) {
    AdvanceCounter(records_received_.Add({{"kind", kind}}), "received/" + kind, value);
  }
  for (const auto& [reason, value] : stats.lost_by_reason) {
    AdvanceCounter(records_lost_.Add({{"reason", reason}}), "lost/" + reason, value);
  }
  for (const ProgramStat& program : stats.programs) {
    const prometheus::Labels labels{{"program", program.name}};
    AdvanceCounter(program_run_seconds_.Add(labels), "run_ns/" + program.name, program.run_ns,
                   1e-9);
    AdvanceCounter(program_runs_.Add(labels), "run_cnt/" + program.name, program.run_cnt);
    probe_up_.Add(labels).Set(program.up ? 1.0 : 0.0);
  }
}

std::string PrometheusExporter::Scrape() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

std::shared_ptr<prometheus::Registry> PrometheusExporter::registry() const { return registry_; }

}  // namespace isoscope::exporters
