#include "collectors/network/net_devices.hpp"

#include <dirent.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "common/fs.hpp"

namespace isoscope::network {

std::vector<HostNic> ListHostNics(const std::string& sysfs_class_net) {
  std::vector<HostNic> out;
  DIR* d = opendir(sysfs_class_net.c_str());
  if (d == nullptr) return out;
  std::vector<std::string> names;
  while (const dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') names.emplace_back(e->d_name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    const std::string base = sysfs_class_net + "/" + name;
    HostNic nic;
    nic.name = name;
    const std::string index = ReadFirstLine(base + "/ifindex");
    const auto [end, ec] = std::from_chars(index.data(), index.data() + index.size(), nic.ifindex);
    if (ec != std::errc() || nic.ifindex == 0) continue;
    char link[512];
    const ssize_t n = readlink((base + "/device/driver").c_str(), link, sizeof(link) - 1);
    if (n > 0) {
      link[n] = '\0';
      const char* slash = std::strrchr(link, '/');
      nic.driver = slash != nullptr ? slash + 1 : link;
    }
    nic.bridge = access((base + "/bridge").c_str(), F_OK) == 0;
    out.push_back(std::move(nic));
  }
  return out;
}

bool IsParavirtDriver(std::string_view driver) { return driver == "virtio_net"; }

std::vector<std::uint32_t> ParavirtIfindexes(const std::vector<HostNic>& nics) {
  std::vector<std::uint32_t> out;
  for (const auto& nic : nics) {
    if (IsParavirtDriver(nic.driver)) out.push_back(nic.ifindex);
  }
  return out;
}

}  // namespace isoscope::network
