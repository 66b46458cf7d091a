// The kernel's own steal account per CPU (/proc/stat, the `steal` column):
// the ground truth the node's hypervisor.steal is compared with.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace isoscope::hypervisor {

// CPU number -> cumulative steal in ns since boot (the column is in USER_HZ ticks). Empty
// when the file cannot be read; a CPU line without a steal column counts 0.
std::map<std::uint32_t, std::uint64_t> ReadProcStatSteal(const std::string& path = "/proc/stat");

}  // namespace isoscope::hypervisor
