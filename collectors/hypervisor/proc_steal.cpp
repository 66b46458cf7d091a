#include "collectors/hypervisor/proc_steal.hpp"

#include <unistd.h>
#include <fstream>
#include <sstream>

namespace isoscope::hypervisor {

std::map<std::uint32_t, std::uint64_t> ReadProcStatSteal(const std::string& path) {
  std::map<std::uint32_t, std::uint64_t> out;
  std::ifstream in(path);
  const long hz = sysconf(_SC_CLK_TCK);
  const std::uint64_t ns_per_tick =
      hz > 0 ? 1000000000ull / static_cast<std::uint64_t>(hz) : 10000000ull;
  std::string line;
  while (std::getline(in, line)) {
    // "cpuN user nice system idle iowait irq softirq steal guest guest_nice"
    if (line.size() < 4 || line.compare(0, 3, "cpu") != 0 || line[3] < '0' || line[3] > '9')
      continue;
    std::istringstream fields(line.substr(3));
    std::uint32_t cpu = 0;
    fields >> cpu;
    std::uint64_t v = 0;
    std::uint64_t steal = 0;
    for (int i = 0; i < 8 && (fields >> v); ++i) {
      if (i == 7) steal = v;
    }
    out[cpu] = steal * ns_per_tick;
  }
  return out;
}

}  // namespace isoscope::hypervisor
