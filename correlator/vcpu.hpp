// The vCPU and node-steal sections of an interval report (docs/hypervisor.md).
#pragma once

#include "collectors/container/thread_table.hpp"
#include "correlator/aggregate.hpp"
#include "correlator/breakdown.hpp"

namespace isoscope::correlator {

// The target's vCPU threads (ThreadDelta::vcpu) and their exits in the sample.
VcpuSection BuildVcpuSection(const container::IntervalSample& sample, const TargetFilter& filter);

// Node-wide: the kernel's steal, the steal the agent charged to threads (all of them) and to
// idle CPUs.
NodeStealSection BuildNodeSteal(const container::IntervalSample& sample);

}  // namespace isoscope::correlator
