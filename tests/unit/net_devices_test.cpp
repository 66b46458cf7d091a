// The host's network devices as sysfs lists them: a sysfs-shaped tree built here (the same files
// and links the kernel provides), then this machine's own /sys/class/net.
#include "collectors/network/net_devices.hpp"

#include <sys/stat.h>
#include <unistd.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace isoscope::network {
namespace {

namespace fs = std::filesystem;

class FakeSysfs : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/isoscope-sysfs-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    fs::create_directories(root_ / "bus/virtio/drivers/virtio_net");
    fs::create_directories(root_ / "bus/pci/drivers/e1000");
    fs::create_directories(root_ / "class/net");
  }
  void TearDown() override { fs::remove_all(root_); }

  // A device directory with an ifindex file, and a device/driver link when driver is given.
  void Add(const std::string& name, const std::string& ifindex,
           const std::string& driver_dir = "") {
    const fs::path dev = root_ / "class/net" / name;
    fs::create_directories(dev);
    if (!ifindex.empty()) std::ofstream(dev / "ifindex") << ifindex << "\n";
    if (!driver_dir.empty()) {
      fs::create_directories(dev / "device");
      fs::create_symlink(root_ / driver_dir, dev / "device/driver");
    }
  }
  std::string ClassNet() const { return (root_ / "class/net").string(); }

  fs::path root_;
};

TEST_F(FakeSysfs, ListsDevicesWithDriverAndBridge) {
  Add("eth0", "2", "bus/virtio/drivers/virtio_net");
  Add("eth1", "3", "bus/pci/drivers/e1000");
  Add("cni0", "7");
  fs::create_directories(root_ / "class/net/cni0/bridge");
  Add("lo", "1");
  Add("gone", "");  // removed while listing: no ifindex

  const auto nics = ListHostNics(ClassNet());
  ASSERT_EQ(nics.size(), 4u);
  EXPECT_EQ(nics[0].name, "cni0");
  EXPECT_TRUE(nics[0].bridge);
  EXPECT_EQ(nics[0].driver, "");
  EXPECT_EQ(nics[1].name, "eth0");
  EXPECT_EQ(nics[1].ifindex, 2u);
  EXPECT_EQ(nics[1].driver, "virtio_net");
  EXPECT_EQ(nics[2].driver, "e1000");
  EXPECT_EQ(nics[3].name, "lo");
  EXPECT_FALSE(nics[3].bridge);

  EXPECT_EQ(ParavirtIfindexes(nics), std::vector<std::uint32_t>{2});
}

TEST_F(FakeSysfs, NoParavirtNic) {
  Add("eth1", "3", "bus/pci/drivers/e1000");
  EXPECT_TRUE(ParavirtIfindexes(ListHostNics(ClassNet())).empty());
  EXPECT_TRUE(ListHostNics((root_ / "missing").string()).empty());
}

TEST(NetDevices, ParavirtDrivers) {
  EXPECT_TRUE(IsParavirtDriver("virtio_net"));
  EXPECT_FALSE(IsParavirtDriver("e1000"));
  EXPECT_FALSE(IsParavirtDriver(""));
}

TEST(NetDevices, ThisMachine) {
  // Every machine has a loopback device, with ifindex 1 in the initial netns.
  const auto nics = ListHostNics();
  bool lo = false;
  for (const auto& nic : nics) lo |= nic.name == "lo" && nic.ifindex > 0;
  EXPECT_TRUE(lo);
}

}  // namespace
}  // namespace isoscope::network
