// The node's block disks and which of them are virtio-blk (paravirt.virtio_blk:
// docs/hypervisor.md, "Block I/O"), read from sysfs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace isoscope::paravirt {

struct BlockDisk {
  std::string name;  // "vda"
  std::uint32_t major = 0;
  std::uint32_t minor = 0;  // of the whole disk
  std::string driver;       // "virtio_blk", "nvme", ... ("" when sysfs does not say)
  bool virtio = false;
  // The kernel's dev_t encoding (major << 20 | minor), the key BPF uses.
  std::uint32_t dev() const { return (major << 20) | minor; }
};

// Every disk under <sys_root>/block (partitions are not listed: a request
// names its whole disk). Loop, ram and zram devices are included; an
// unreadable entry is skipped.
std::vector<BlockDisk> ListBlockDisks(const std::string& sys_root = "/sys");

}  // namespace isoscope::paravirt
