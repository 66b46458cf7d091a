// The network devices of the agent's (host) netns as sysfs shows them (/sys/class/net), and which
// of them are paravirtual NICs whose device queue is the `virtio` slice (docs/network.md).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace isoscope::network {

struct HostNic {
  std::string name;
  std::uint32_t ifindex = 0;
  std::string driver;   // basename of device/driver ("virtio_net", "e1000"); "" for virtual devices
  bool bridge = false;  // has a bridge/ directory
};

// The devices under `sysfs_class_net`, sorted by name. A device whose ifindex cannot be read is
// left out (it went away while listing).
std::vector<HostNic> ListHostNics(const std::string& sysfs_class_net = "/sys/class/net");

// Drivers whose transmit ring is the `virtio` slice: virtio_net, the virtio-net device of KVM/QEMU,
// Firecracker and cloud VMs.
bool IsParavirtDriver(std::string_view driver);

// The ifindexes of the paravirtual NICs among `nics`, in name order.
std::vector<std::uint32_t> ParavirtIfindexes(const std::vector<HostNic>& nics);

}  // namespace isoscope::network
