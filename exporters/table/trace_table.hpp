// The human output of `isoscope trace`: one block per interval, read at a glance.
//
//   isoscope trace pid 4242 (node) · pod 5b2c… · container 3f1a…c2 · cgroup v2 · 4 threads
//   verdict  container.cpu_throttle  78%  (confidence 0.93)
//
//   interval 2.0 s, 8.0 thread-s           seconds    share
//     container.cpu_throttle                   6.24    78.0%  ███████████████████████▍
//     app.on_cpu                               1.60    20.0%  ██████
//
// Unknown parts of the header are left out; causes with zero seconds are omitted and rows are
// sorted by seconds, descending. Bars are 30 cells for 100%, in eighths of a cell.
#pragma once

#include <string>

#include "correlator/breakdown.hpp"

namespace isoscope::exporters {

// Lines end with '\n'. With `color`, ANSI escapes highlight the verdict and tint bars by layer.
// per_vcpu: one line per vCPU thread under the target's vCPU summary (trace --vcpus).
std::string RenderTraceTable(const correlator::IntervalReport& report, bool color = false,
                             bool per_vcpu = false);

}  // namespace isoscope::exporters
