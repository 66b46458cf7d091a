// The workload labels every isoscope metric family carries (pod_uid, container_id, cgroup, and the
// Kubernetes names namespace, pod, container in kube-state-metrics' convention, empty where the
// container runtime did not name them), with bounded cardinality: after `max_workloads` distinct
// workloads, further ones fold into {cgroup="other"} with every other workload label empty. Each
// exporter counts the folds its own way (its *_workloads_overflow_total counter). Not
// thread-safe: callers hold their own lock.
#pragma once

#include <cstddef>
#include <set>
#include <string>
#include <tuple>

#include <prometheus/labels.h>

#include "correlator/breakdown.hpp"

namespace isoscope::exporters {

class WorkloadFolder {
 public:
  explicit WorkloadFolder(std::size_t max_workloads) : max_workloads_(max_workloads) {}

  // Labels for `target`; sets *folded when it went into the overflow series.
  prometheus::Labels Labels(const correlator::TargetInfo& target, bool* folded) {
    Key key{target.pod_uid,        target.container_id, target.cgroup,
            target.namespace_name, target.pod_name,     target.container_name};
    *folded = false;
    if (workloads_.count(key) == 0) {
      if (workloads_.size() < max_workloads_) {
        workloads_.insert(key);
      } else {
        *folded = true;
        key = Key{"", "", "other", "", "", ""};
      }
    }
    auto& [pod_uid, container_id, cgroup, ns, pod, container] = key;
    return {{"pod_uid", std::move(pod_uid)}, {"container_id", std::move(container_id)},
            {"cgroup", std::move(cgroup)},   {"namespace", std::move(ns)},
            {"pod", std::move(pod)},         {"container", std::move(container)}};
  }

 private:
  // pod uid, container id, cgroup, namespace, pod, container
  using Key =
      std::tuple<std::string, std::string, std::string, std::string, std::string, std::string>;
  const std::size_t max_workloads_;
  std::set<Key> workloads_;
};

}  // namespace isoscope::exporters
