#include "collectors/paravirt/block_devices.hpp"

#include <cstdio>
#include <filesystem>
#include <system_error>

#include "common/fs.hpp"

namespace isoscope::paravirt {

std::vector<BlockDisk> ListBlockDisks(const std::string& sys_root) {
  namespace fs = std::filesystem;
  std::vector<BlockDisk> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(sys_root) / "block", ec)) {
    BlockDisk d;
    d.name = entry.path().filename().string();
    const std::string dev = ReadFirstLine((entry.path() / "dev").string());
    if (std::sscanf(dev.c_str(), "%u:%u", &d.major, &d.minor) != 2) continue;
    // <disk>/device/driver -> .../drivers/virtio_blk (virtio: the device is a virtio bus
    // device); NVMe and SCSI disks name their own drivers one level up.
    for (const char* link : {"device/driver", "device/device/driver"}) {
      const fs::path target = fs::read_symlink(entry.path() / link, ec);
      if (!ec) {
        d.driver = target.filename().string();
        break;
      }
    }
    d.virtio = d.driver == "virtio_blk";
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace isoscope::paravirt
