// Unit tests for collectors/identity: cgroup path -> workload identity,
// /proc/PID/cgroup and mountinfo parsing, and cgroup id <-> path walks.
// The strings are in the exact formats the kernel, kubelet, runc, CRI-O and
// Docker produce.
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "collectors/identity/cgroup_identity.hpp"

namespace isoscope::identity {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

// ---- fixtures: a pod uid in its three spellings, and container ids ------------------

constexpr std::string_view kUid = "6f2b1f6e-9a3c-4b8e-8d2f-0c1e2a3b4c5d";
constexpr std::string_view kUidUnderscore = "6f2b1f6e_9a3c_4b8e_8d2f_0c1e2a3b4c5d";
// Static (mirror) pods: the uid is the 32-hex config hash, no separators.
constexpr std::string_view kStaticUid = "8daa50c3a64c9ff60bb9eab7b44b56fd";
constexpr std::string_view kStaticUidCanonical = "8daa50c3-a64c-9ff6-0bb9-eab7b44b56fd";

constexpr std::string_view kId = "a172cedcae47474b615c54d510a5d84a8dea3032e958587430b413538be3f333";
constexpr std::string_view kPauseId =
    "6210c0bf05396716df932f0729df69de0533933e5ad9871fd07b61811c4c28df";
constexpr std::string_view kNodeId =
    "545ea538461003efdc8c81c244531b003f6f26cfccf6c0073b3239fdedf49446";
static_assert(kUid.size() == 36 && kUidUnderscore.size() == 36 && kStaticUid.size() == 32);
static_assert(kId.size() == 64 && kPauseId.size() == 64 && kNodeId.size() == 64);

std::string S(std::string_view s) { return std::string(s); }

// ---- ParseCgroupPath: table ------------------------------------------------------------

struct PathCase {
  std::string name;  // test name suffix
  std::string path;
  std::string pod_uid;
  std::string container_id;
  Runtime runtime = Runtime::kUnknown;
  QosClass qos = QosClass::kUnknown;
};

void PrintTo(const PathCase& c, std::ostream* os) { *os << c.name << ": " << c.path; }

std::vector<PathCase> PositiveCases() {
  const std::string uid = S(kUid);
  const std::string uid_us = S(kUidUnderscore);
  const std::string id = S(kId);
  const std::string pause = S(kPauseId);
  const std::string burstable_slice =
      "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid_us + ".slice";
  const std::string besteffort_slice =
      "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uid_us + ".slice";
  const std::string guaranteed_slice = "/kubepods.slice/kubepods-pod" + uid_us + ".slice";
  using R = Runtime;
  using Q = QosClass;
  return {
      // ---- cgroupfs driver (containerd, or Docker via dockershim / cri-dockerd) ----
      {"CgroupfsBurstable", "/kubepods/burstable/pod" + uid + "/" + id, uid, id, R::kUnknown,
       Q::kBurstable},
      {"CgroupfsBestEffort", "/kubepods/besteffort/pod" + uid + "/" + id, uid, id, R::kUnknown,
       Q::kBestEffort},
      {"CgroupfsGuaranteed", "/kubepods/pod" + uid + "/" + id, uid, id, R::kUnknown,
       Q::kGuaranteed},
      {"CgroupfsPauseContainer", "/kubepods/besteffort/pod" + uid + "/" + pause, uid, pause,
       R::kUnknown, Q::kBestEffort},
      {"CgroupfsCrio", "/kubepods/burstable/pod" + uid + "/crio-" + id, uid, id, R::kCrio,
       Q::kBurstable},
      {"CgroupfsCrioConmon", "/kubepods/burstable/pod" + uid + "/crio-conmon-" + id, uid, id,
       R::kCrio, Q::kBurstable},
      {"CgroupfsPodLevel", "/kubepods/burstable/pod" + uid, uid, "", R::kUnknown, Q::kBurstable},
      {"CgroupfsPodLevelGuaranteed", "/kubepods/pod" + uid, uid, "", R::kUnknown, Q::kGuaranteed},
      {"CgroupfsV1Absolute", "/sys/fs/cgroup/cpu/kubepods/burstable/pod" + uid + "/" + id, uid, id,
       R::kUnknown, Q::kBurstable},
      {"CgroupfsV1CombinedController",
       "/sys/fs/cgroup/cpu,cpuacct/kubepods/besteffort/pod" + uid + "/" + id, uid, id, R::kUnknown,
       Q::kBestEffort},
      {"CgroupfsKubeletCgroupRoot", "/kubelet/kubepods/burstable/pod" + uid + "/" + id, uid, id,
       R::kUnknown, Q::kBurstable},
      {"CgroupfsUnderscoreUidAccepted", "/kubepods/burstable/pod" + uid_us + "/" + id, uid, id,
       R::kUnknown, Q::kBurstable},
      // ---- plain Docker ----
      {"DockerCgroupfs", "/docker/" + id, "", id, R::kDocker, Q::kUnknown},
      {"DockerCgroupfsV1Absolute", "/sys/fs/cgroup/memory/docker/" + id, "", id, R::kDocker,
       Q::kUnknown},
      {"DockerSystemd", "/system.slice/docker-" + id + ".scope", "", id, R::kDocker, Q::kUnknown},
      {"DockerSystemdV2Absolute", "/sys/fs/cgroup/system.slice/docker-" + id + ".scope", "", id,
       R::kDocker, Q::kUnknown},
      {"DockerSystemdSubCgroup", "/system.slice/docker-" + id + ".scope/init.scope", "", id,
       R::kDocker, Q::kUnknown},
      // ---- systemd driver ----
      {"SystemdContainerdBurstable", burstable_slice + "/cri-containerd-" + id + ".scope", uid, id,
       R::kContainerd, Q::kBurstable},
      {"SystemdContainerdBestEffort", besteffort_slice + "/cri-containerd-" + id + ".scope", uid,
       id, R::kContainerd, Q::kBestEffort},
      {"SystemdContainerdGuaranteed", guaranteed_slice + "/cri-containerd-" + id + ".scope", uid,
       id, R::kContainerd, Q::kGuaranteed},
      {"SystemdContainerdPause", burstable_slice + "/cri-containerd-" + pause + ".scope", uid,
       pause, R::kContainerd, Q::kBurstable},
      {"SystemdCrio", burstable_slice + "/crio-" + id + ".scope", uid, id, R::kCrio, Q::kBurstable},
      {"SystemdCrioGuaranteed", guaranteed_slice + "/crio-" + id + ".scope", uid, id, R::kCrio,
       Q::kGuaranteed},
      {"SystemdCrioConmon", besteffort_slice + "/crio-conmon-" + id + ".scope", uid, id, R::kCrio,
       Q::kBestEffort},
      {"SystemdCrioSubCgroup", burstable_slice + "/crio-" + id + ".scope/container", uid, id,
       R::kCrio, Q::kBurstable},
      {"CrioConmonInSystemSlice", "/system.slice/crio-conmon-" + id + ".scope", "", id, R::kCrio,
       Q::kUnknown},
      {"SystemdDocker", besteffort_slice + "/docker-" + id + ".scope", uid, id, R::kDocker,
       Q::kBestEffort},
      {"SystemdDockerProcessSubCgroup", besteffort_slice + "/docker-" + id + ".scope/kube-proxy",
       uid, id, R::kDocker, Q::kBestEffort},
      {"SystemdPodLevel", burstable_slice, uid, "", R::kUnknown, Q::kBurstable},
      {"SystemdPodLevelGuaranteed", guaranteed_slice, uid, "", R::kUnknown, Q::kGuaranteed},
      {"SystemdV2Absolute", "/sys/fs/cgroup" + burstable_slice + "/cri-containerd-" + id + ".scope",
       uid, id, R::kContainerd, Q::kBurstable},
      {"SystemdV1Absolute", "/sys/fs/cgroup/memory" + besteffort_slice + "/crio-" + id + ".scope",
       uid, id, R::kCrio, Q::kBestEffort},
      {"SystemdStaticPodUid",
       "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + S(kStaticUid) +
           ".slice/cri-containerd-" + id + ".scope",
       S(kStaticUidCanonical), id, R::kContainerd, Q::kBurstable},
      // ---- nested hierarchies (kind, minikube, Docker-in-Docker) ----
      {"KindNodeView",
       "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
       "kubelet-kubepods-besteffort-pod" +
           uid_us + ".slice/cri-containerd-" + id + ".scope",
       uid, id, R::kContainerd, Q::kBestEffort},
      {"KindNodeGuaranteed",
       "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + uid_us +
           ".slice/cri-containerd-" + id + ".scope",
       uid, id, R::kContainerd, Q::kGuaranteed},
      {"KindHostView",
       "/system.slice/docker-" + S(kNodeId) +
           ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
           "kubelet-kubepods-burstable-pod" +
           uid_us + ".slice/cri-containerd-" + id + ".scope",
       uid, id, R::kContainerd, Q::kBurstable},
      {"KindRuncColonForm",
       "/system.slice/containerd.service/kubepods-burstable-pod" + uid_us +
           ".slice:cri-containerd:" + id,
       uid, id, R::kContainerd, Q::kBurstable},
      {"RuncColonFormCrioGuaranteed", "/kubepods-pod" + uid_us + ".slice:crio:" + id, uid, id,
       R::kCrio, Q::kGuaranteed},
      {"MinikubeDockerCgroupfs",
       "/docker/" + S(kNodeId) + "/kubepods/besteffort/pod" + uid + "/" + id, uid, id, R::kUnknown,
       Q::kBestEffort},
      {"MinikubeDockerSystemd",
       "/docker/" + S(kNodeId) + besteffort_slice + "/crio-" + id + ".scope", uid, id, R::kCrio,
       Q::kBestEffort},
      {"DockerInDockerOutermostWins", "/docker/" + S(kNodeId) + "/docker/" + id, "", S(kNodeId),
       R::kDocker, Q::kUnknown},
      // ---- spelling tolerance ----
      {"TrailingAndDoubleSlashes", "//kubepods//burstable/pod" + uid + "//" + id + "/", uid, id,
       R::kUnknown, Q::kBurstable},
      {"UpperCaseNormalised",
       "/kubepods/burstable/pod6F2B1F6E-9A3C-4B8E-8D2F-0C1E2A3B4C5D/" +
           std::string("A172CEDCAE47474B615C54D510A5D84A8DEA3032E958587430B413538BE3F333"),
       uid, id, R::kUnknown, Q::kBurstable},
      {"RelativeWithoutLeadingSlash", "kubepods/pod" + uid + "/" + id, uid, id, R::kUnknown,
       Q::kGuaranteed},
      // A pod whose child is not a valid container still identifies the pod.
      {"PodWithShortContainerId", "/kubepods/burstable/pod" + uid + "/a172cedcae47", uid, "",
       R::kUnknown, Q::kBurstable},
      {"PodWithLongContainerId", "/kubepods/burstable/pod" + uid + "/" + id + "0", uid, "",
       R::kUnknown, Q::kBurstable},
      {"PodWithNonHexScope", burstable_slice + "/cri-containerd-" + id.substr(0, 63) + "g.scope",
       uid, "", R::kUnknown, Q::kBurstable},
      {"PodWithBareIdScope", burstable_slice + "/" + id + ".scope", uid, "", R::kUnknown,
       Q::kBurstable},
      // No pod, but a runtime-prefixed container scope still names the container:
      // CRI cgroup_parent outside kubepods, or a pod slice we cannot read.
      {"ContainerdCustomCgroupParent",
       "/system.slice/system-getty.slice/cri-containerd-" + id + ".scope", "", id, R::kContainerd,
       Q::kUnknown},
      {"MalformedPodSliceStillGivesContainer",
       "/kubepods.slice/kubepods-burstable-pod" + uid_us + "-extra.slice/cri-containerd-" + id +
           ".scope",
       "", id, R::kContainerd, Q::kUnknown},
  };
}

std::vector<PathCase> NegativeCases() {
  const std::string uid = S(kUid);
  const std::string uid_us = S(kUidUnderscore);
  const std::string id = S(kId);
  return {
      {"Empty", "", "", "", {}, {}},
      {"Root", "/", "", "", {}, {}},
      {"OnlySlashes", "////", "", "", {}, {}},
      {"UserSession", "/user.slice/user-1000.slice/session-3.scope", "", "", {}, {}},
      {"InitScope", "/init.scope", "", "", {}, {}},
      {"ContainerdService", "/system.slice/containerd.service", "", "", {}, {}},
      {"KubepodsRootCgroupfs", "/kubepods", "", "", {}, {}},
      {"QosLevelCgroupfs", "/kubepods/burstable", "", "", {}, {}},
      {"QosLevelSystemd", "/kubepods.slice/kubepods-besteffort.slice", "", "", {}, {}},
      {"DockerShortId", "/docker/a172cedcae47", "", "", {}, {}},
      {"DockerScopeShortId", "/system.slice/docker-a172cedcae47.scope", "", "", {}, {}},
      {"DockerId63", "/docker/" + id.substr(0, 63), "", "", {}, {}},
      {"DockerId65", "/docker/" + id + "3", "", "", {}, {}},
      {"DockerNonHex", "/docker/" + id.substr(0, 63) + "z", "", "", {}, {}},
      {"DockerWithoutId", "/docker", "", "", {}, {}},
      {"BareIdOutsidePod", "/some/where/" + id, "", "", {}, {}},
      {"UnknownScopePrefix", "/machine.slice/libvirt-" + id + ".scope", "", "", {}, {}},
      {"ShortUidCgroupfs", "/kubepods/burstable/pod6f2b1f6e-9a3c/" + id, "", "", {}, {}},
      {"Uid31HexDigits", "/kubepods/burstable/pod" + uid.substr(0, 35) + "/" + id, "", "", {}, {}},
      {"UidNonHex", "/kubepods/pod6f2b1f6e-9a3c-4b8e-8d2f-0c1e2a3b4c5x/" + id, "", "", {}, {}},
      {"UidMixedSeparators",
       "/kubepods/pod6f2b1f6e-9a3c_4b8e-8d2f-0c1e2a3b4c5d/" + id,
       "",
       "",
       {},
       {}},
      {"UidMisplacedDashes",
       "/kubepods/pod6f2b1f6e9-a3c-4b8e-8d2f-0c1e2a3b4c5d/" + id,
       "",
       "",
       {},
       {}},
      {"PodDirWithoutKubepods", "/elsewhere/pod" + uid + "/" + id, "", "", {}, {}},
      {"UnknownQosLevel", "/kubepods/guaranteed/pod" + uid + "/" + id, "", "", {}, {}},
      {"SliceWithTrailingJunk",
       "/kubepods.slice/kubepods-burstable-pod" + uid_us + "-extra.slice",
       "",
       "",
       {},
       {}},
      {"SliceDashedUid", "/kubepods.slice/kubepods-pod" + uid + ".slice", "", "", {}, {}},
      {"SliceWithoutSuffix", "/kubepods.slice/kubepods-pod" + uid_us, "", "", {}, {}},
      {"ColonFormBadSlice",
       "/system.slice/containerd.service/notkube.slice:cri-containerd:" + id,
       "",
       "",
       {},
       {}},
      {"Junk", "::::--..//__\\\\", "", "", {}, {}},
  };
}

class ParseCgroupPathTest : public ::testing::TestWithParam<PathCase> {};

TEST_P(ParseCgroupPathTest, Parses) {
  const PathCase& c = GetParam();
  const WorkloadIdentity got = ParseCgroupPath(c.path);
  EXPECT_EQ(got.pod_uid, c.pod_uid);
  EXPECT_EQ(got.container_id, c.container_id);
  EXPECT_EQ(RuntimeName(got.runtime), RuntimeName(c.runtime));
  EXPECT_EQ(QosName(got.qos), QosName(c.qos));
  EXPECT_EQ(got.empty(), c.pod_uid.empty() && c.container_id.empty());
}

std::string CaseName(const ::testing::TestParamInfo<PathCase>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Recognised, ParseCgroupPathTest, ::testing::ValuesIn(PositiveCases()),
                         CaseName);
INSTANTIATE_TEST_SUITE_P(Rejected, ParseCgroupPathTest, ::testing::ValuesIn(NegativeCases()),
                         CaseName);

TEST(ParseCgroupPathTest, NegativeCasesAreFullyEmpty) {
  for (const PathCase& c : NegativeCases()) {
    const WorkloadIdentity got = ParseCgroupPath(c.path);
    EXPECT_TRUE(got.empty()) << c.name;
    EXPECT_EQ(got.runtime, Runtime::kUnknown) << c.name;
    EXPECT_EQ(got.qos, QosClass::kUnknown) << c.name;
  }
}

// Splices fragments of real paths together at random: whatever comes out must
// parse without crashing (run under ASan/UBSan), and any id it reports must be
// well formed.
TEST(ParseCgroupPathTest, RandomFragmentsNeverCrash) {
  const std::vector<std::string> fragments = {"/",
                                              "//",
                                              "kubepods",
                                              "kubepods.slice",
                                              "kubepods-",
                                              "burstable",
                                              "besteffort",
                                              "-pod",
                                              "pod",
                                              S(kUid),
                                              S(kUidUnderscore),
                                              S(kStaticUid),
                                              S(kId),
                                              S(kId).substr(0, 40),
                                              ".slice",
                                              ".scope",
                                              "cri-containerd-",
                                              "crio-",
                                              "crio-conmon-",
                                              "docker-",
                                              "docker",
                                              ":",
                                              "_",
                                              "-",
                                              "system.slice",
                                              "\\040",
                                              "",
                                              "x"};
  std::mt19937 rng(20240611);  // fixed seed: reproducible
  std::uniform_int_distribution<std::size_t> pick(0, fragments.size() - 1);
  std::uniform_int_distribution<int> length(0, 24);
  for (int round = 0; round < 20000; ++round) {
    std::string path;
    for (int i = length(rng); i > 0; --i) path += fragments[pick(rng)];
    const WorkloadIdentity got = ParseCgroupPath(path);
    if (!got.container_id.empty()) {
      ASSERT_EQ(got.container_id.size(), 64u) << path;
      ASSERT_TRUE(std::all_of(got.container_id.begin(), got.container_id.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      })) << path;
    }
    if (!got.pod_uid.empty()) {
      ASSERT_EQ(got.pod_uid.size(), 36u) << path;
      ASSERT_NE(got.qos, QosClass::kUnknown) << path;
    }
  }
}

TEST(NamesTest, RuntimeQosAndMode) {
  EXPECT_EQ(RuntimeName(Runtime::kContainerd), "containerd");
  EXPECT_EQ(RuntimeName(Runtime::kCrio), "cri-o");
  EXPECT_EQ(RuntimeName(Runtime::kDocker), "docker");
  EXPECT_EQ(RuntimeName(Runtime::kUnknown), "");
  EXPECT_EQ(QosName(QosClass::kGuaranteed), "guaranteed");
  EXPECT_EQ(QosName(QosClass::kBurstable), "burstable");
  EXPECT_EQ(QosName(QosClass::kBestEffort), "besteffort");
  EXPECT_EQ(QosName(QosClass::kUnknown), "");
  EXPECT_EQ(CgroupModeName(CgroupMode::kV1), "v1");
  EXPECT_EQ(CgroupModeName(CgroupMode::kV2), "v2");
  EXPECT_EQ(CgroupModeName(CgroupMode::kHybrid), "hybrid");
  EXPECT_EQ(CgroupModeName(CgroupMode::kNone), "none");
}

// ---- ParseProcCgroup -------------------------------------------------------------------------

TEST(ParseProcCgroupTest, HybridKubernetesContainer) {
  const std::string path = "/kubepods/burstable/pod" + S(kUid) + "/" + S(kId);
  const std::string content = "12:hugetlb:" + path + "\n" +           //
                              "11:cpu,cpuacct:" + path + "\n" +       //
                              "10:net_cls,net_prio:" + path + "\n" +  //
                              "9:memory:" + path + "\n" +             //
                              "8:pids:" + path + "\n" +               //
                              "1:name=systemd:" + path + "\n" +       //
                              "0::/\n";
  Result<ProcCgroups> got = ParseProcCgroup(content);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->v2_path, "/");
  EXPECT_EQ(got->v1_paths.size(), 8u);
  EXPECT_EQ(got->v1_paths.at("cpu"), path);
  EXPECT_EQ(got->v1_paths.at("cpuacct"), path);
  EXPECT_EQ(got->v1_paths.at("net_cls"), path);
  EXPECT_EQ(got->v1_paths.at("net_prio"), path);
  EXPECT_EQ(got->v1_paths.at("name=systemd"), path);
  EXPECT_EQ(ParseCgroupPath(got->v1_paths.at("cpu")).container_id, kId);
}

// Verbatim /proc/self/cgroup of a shell on the (hybrid) development machine.
TEST(ParseProcCgroupTest, RealHybridHost) {
  constexpr std::string_view kContent =
      "9:name=systemd:/\n"
      "8:pids:/\n"
      "7:blkio:/\n"
      "6:freezer:/\n"
      "5:devices:/\n"
      "4:memory:/process_api/80b1ab2a134f027cc7def1008ae0a5c5\n"
      "3:cpuset:/\n"
      "2:cpuacct:/\n"
      "1:cpu:/\n"
      "0::/\n";
  Result<ProcCgroups> got = ParseProcCgroup(kContent);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->v2_path, "/");
  EXPECT_THAT(got->v1_paths,
              UnorderedElementsAre(Pair("name=systemd", "/"), Pair("pids", "/"), Pair("blkio", "/"),
                                   Pair("freezer", "/"), Pair("devices", "/"),
                                   Pair("memory", "/process_api/80b1ab2a134f027cc7def1008ae0a5c5"),
                                   Pair("cpuset", "/"), Pair("cpuacct", "/"), Pair("cpu", "/")));
}

TEST(ParseProcCgroupTest, PureV2) {
  const std::string path = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" +
                           S(kUidUnderscore) + ".slice/cri-containerd-" + S(kId) + ".scope";
  Result<ProcCgroups> got = ParseProcCgroup("0::" + path + "\n");
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->v2_path, path);
  EXPECT_TRUE(got->v1_paths.empty());
}

TEST(ParseProcCgroupTest, NoTrailingNewlineAndColonInPath) {
  const std::string path = "/system.slice/containerd.service/kubepods-burstable-pod" +
                           S(kUidUnderscore) + ".slice:cri-containerd:" + S(kId);
  Result<ProcCgroups> got = ParseProcCgroup("0::" + path);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->v2_path, path);
  EXPECT_EQ(ParseCgroupPath(got->v2_path).pod_uid, kUid);
}

TEST(ParseProcCgroupTest, DeletedSuffixIsStripped) {
  Result<ProcCgroups> got =
      ParseProcCgroup("0::/system.slice/docker-" + S(kId) + ".scope (deleted)\n");
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->v2_path, "/system.slice/docker-" + S(kId) + ".scope");
}

TEST(ParseProcCgroupTest, EmptyContentIsEmpty) {
  Result<ProcCgroups> got = ParseProcCgroup("");
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->v2_path.empty());
  EXPECT_TRUE(got->v1_paths.empty());
}

TEST(ParseProcCgroupTest, MalformedLinesFail) {
  const std::vector<std::string> bad = {
      "garbage",              // no colons
      "4:cpu",                // no path
      "x:cpu:/a",             // non-numeric id
      ":cpu:/a",              // empty id
      "-1:cpu:/a",            // negative id
      "4:cpu:relative/path",  // path not absolute
      "4:cpu:",               // empty path
      "4::/a",                // cgroup1 hierarchy without controllers
      "0:cpu:/a",             // hierarchy 0 is cgroup2: no controllers
      "4:cpu,,memory:/a",     // empty controller name
      "\n",                   // blank line
  };
  for (const std::string& line : bad) {
    Result<ProcCgroups> got = ParseProcCgroup(line);
    EXPECT_FALSE(got.ok()) << "accepted: '" << line << "'";
  }
  Result<ProcCgroups> got = ParseProcCgroup("0::/\n4:cpu\n");
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(got.error().message, HasSubstr("line 2"));
}

TEST(ReadProcCgroupTest, Self) {
  Result<ProcCgroups> got = ReadProcCgroup(static_cast<int>(::getpid()));
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_TRUE(!got->v2_path.empty() || !got->v1_paths.empty());
}

TEST(ReadProcCgroupTest, MissingProcess) {
  // Above the kernel's PID_MAX_LIMIT (4194304), so it can never exist.
  constexpr int kPid = 999999999;
  Result<ProcCgroups> got = ReadProcCgroup(kPid);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().message, "process 999999999 not found");
  EXPECT_EQ(got.error().code, ENOENT);

  EXPECT_FALSE(ReadProcCgroup(0).ok());
  EXPECT_FALSE(ReadProcCgroup(-5).ok());
}

// ---- ParseMountinfo --------------------------------------------------------------------------

// Verbatim lines from the development machine's /proc/self/mountinfo (hybrid:
// one cgroup1 mount per controller, cgroup2 at /sys/fs/cgroup/unified).
constexpr std::string_view kRealHybridMountinfo =
    "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
    "23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n"
    "24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs "
    "rw,size=12334524k,nr_inodes=3083631,mode=755\n"
    "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534\n"
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices\n"
    "37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n"
    "38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio\n"
    "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

TEST(ParseMountinfoTest, RealHybridHost) {
  Result<CgroupMounts> got = ParseMountinfo(kRealHybridMountinfo);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->v2_root, "/sys/fs/cgroup/unified");
  EXPECT_THAT(
      got->v1_roots,
      UnorderedElementsAre(
          Pair("cpu", "/sys/fs/cgroup/cpu"), Pair("cpuacct", "/sys/fs/cgroup/cpuacct"),
          Pair("cpuset", "/sys/fs/cgroup/cpuset"), Pair("memory", "/sys/fs/cgroup/memory"),
          Pair("devices", "/sys/fs/cgroup/devices"), Pair("freezer", "/sys/fs/cgroup/freezer"),
          Pair("blkio", "/sys/fs/cgroup/blkio"), Pair("pids", "/sys/fs/cgroup/pids"),
          Pair("name=systemd", "/sys/fs/cgroup/systemd")));
  EXPECT_EQ(got->mode(), CgroupMode::kHybrid);
}

// systemd "hybrid" layout (Ubuntu 20.04): co-mounted controllers, optional
// fields ("shared:N") before the separator, and non-controller super options.
TEST(ParseMountinfoTest, SystemdHybridCoMounted) {
  constexpr std::string_view kContent =
      "35 24 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"
      "36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 "
      "cgroup2 rw,nsdelegate\n"
      "37 35 0:32 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup "
      "cgroup rw,xattr,name=systemd\n"
      "40 35 0:35 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup "
      "cgroup rw,cpu,cpuacct\n"
      "41 35 0:36 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:17 - "
      "cgroup cgroup rw,net_cls,net_prio\n"
      "42 35 0:37 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:18 - cgroup "
      "cgroup rw,seclabel,cpuset,clone_children\n"
      "43 35 0:38 / /sys/fs/cgroup/misc rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup "
      "rw,misc,release_agent=/sbin/agent\n";
  Result<CgroupMounts> got = ParseMountinfo(kContent);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->v2_root, "/sys/fs/cgroup/unified");
  EXPECT_THAT(got->v1_roots,
              UnorderedElementsAre(Pair("name=systemd", "/sys/fs/cgroup/systemd"),
                                   Pair("cpu", "/sys/fs/cgroup/cpu,cpuacct"),
                                   Pair("cpuacct", "/sys/fs/cgroup/cpu,cpuacct"),
                                   Pair("net_cls", "/sys/fs/cgroup/net_cls,net_prio"),
                                   Pair("net_prio", "/sys/fs/cgroup/net_cls,net_prio"),
                                   Pair("cpuset", "/sys/fs/cgroup/cpuset"),
                                   Pair("misc", "/sys/fs/cgroup/misc")));
  EXPECT_EQ(got->mode(), CgroupMode::kHybrid);
}

// Pure cgroup2 host (Debian 12, Fedora, Ubuntu 22.04+).
TEST(ParseMountinfoTest, PureV2) {
  constexpr std::string_view kContent =
      "22 29 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
      "26 22 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
      "rw,nsdelegate,memory_recursiveprot\n"
      "29 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro\n";
  Result<CgroupMounts> got = ParseMountinfo(kContent);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->v2_root, "/sys/fs/cgroup");
  EXPECT_TRUE(got->v1_roots.empty());
  EXPECT_EQ(got->mode(), CgroupMode::kV2);
}

// A cgroup2 host where Docker keeps a named name=systemd hierarchy for old
// images: no cgroup1 controller, so still v2.
TEST(ParseMountinfoTest, V2WithNamedHierarchyOnlyIsV2) {
  constexpr std::string_view kContent =
      "26 22 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw\n"
      "90 26 0:50 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n";
  Result<CgroupMounts> got = ParseMountinfo(kContent);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_THAT(got->v1_roots, ElementsAre(Pair("name=systemd", "/sys/fs/cgroup/systemd")));
  EXPECT_EQ(got->mode(), CgroupMode::kV2);
}

// cgroup1-only host (CentOS 7).
TEST(ParseMountinfoTest, PureV1) {
  constexpr std::string_view kContent =
      "25 18 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs "
      "ro,seclabel,mode=755\n"
      "26 25 0:22 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:9 - cgroup "
      "cgroup rw,seclabel,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd\n"
      "29 25 0:25 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup "
      "cgroup "
      "rw,seclabel,memory\n"
      "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup "
      "cgroup rw,seclabel,cpuacct,cpu\n";
  Result<CgroupMounts> got = ParseMountinfo(kContent);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_TRUE(got->v2_root.empty());
  EXPECT_THAT(got->v1_roots, UnorderedElementsAre(Pair("name=systemd", "/sys/fs/cgroup/systemd"),
                                                  Pair("memory", "/sys/fs/cgroup/memory"),
                                                  Pair("cpu", "/sys/fs/cgroup/cpu,cpuacct"),
                                                  Pair("cpuacct", "/sys/fs/cgroup/cpu,cpuacct")));
  EXPECT_EQ(got->mode(), CgroupMode::kV1);
}

TEST(ParseMountinfoTest, NoCgroupsIsNone) {
  Result<CgroupMounts> got = ParseMountinfo("22 27 0:21 / /proc rw,relatime - proc proc rw\n");
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->mode(), CgroupMode::kNone);
  Result<CgroupMounts> empty = ParseMountinfo("");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->mode(), CgroupMode::kNone);
}

// The hierarchy's root mount wins over an earlier bind mount of a sub-cgroup
// (field 4 is the mount's root inside the hierarchy).
TEST(ParseMountinfoTest, PrefersRootMountOverBindMount) {
  constexpr std::string_view kContent =
      "50 40 0:24 /kubepods.slice /run/pod-cgroup rw,relatime - cgroup2 cgroup2 rw\n"
      "51 40 0:29 /docker /run/cpu-cgroup rw,relatime - cgroup cgroup rw,cpu\n"
      "26 22 0:24 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n"
      "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
      "60 40 0:24 / /mnt/other rw,relatime - cgroup2 cgroup2 rw\n";
  Result<CgroupMounts> got = ParseMountinfo(kContent);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->v2_root, "/sys/fs/cgroup");
  EXPECT_EQ(got->v1_roots.at("cpu"), "/sys/fs/cgroup/cpu");
}

TEST(ParseMountinfoTest, UnescapesMountPoint) {
  Result<CgroupMounts> got =
      ParseMountinfo("26 22 0:24 / /mnt/my\\040cgroup\\134x rw,relatime - cgroup2 cgroup2 rw\n");
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->v2_root, "/mnt/my cgroup\\x");
}

TEST(ParseMountinfoTest, MalformedLinesFail) {
  const std::vector<std::string> bad = {
      "garbage",
      "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime cgroup cgroup rw,cpu",  // no separator
      "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup",              // truncated after it
      "32 31 - cgroup cgroup rw,cpu",                                      // too few fields
  };
  for (const std::string& line : bad) {
    EXPECT_FALSE(ParseMountinfo(line).ok()) << "accepted: '" << line << "'";
  }
  Result<CgroupMounts> got =
      ParseMountinfo(std::string(kRealHybridMountinfo) + "99 31 0:40 / /x rw - cgroup\n");
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(got.error().message, HasSubstr("line 16"));
}

TEST(ReadMountsTest, ThisMachine) {
  Result<CgroupMounts> got = ReadMounts();
  ASSERT_TRUE(got.ok()) << got.error().message;
  // Whatever this machine is, mode() and the roots must agree.
  if (got->mode() == CgroupMode::kV2 || got->mode() == CgroupMode::kHybrid) {
    EXPECT_FALSE(got->v2_root.empty());
  }
}

// ---- cgroup ids <-> paths on a scratch directory tree ------------------------------------

class HierarchyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = ::testing::TempDir() + "identity_test_XXXXXX";
    ASSERT_NE(::mkdtemp(templ.data()), nullptr) << std::strerror(errno);
    root_ = templ;
    namespace fs = std::filesystem;
    // root/{kubepods.slice/{a.slice/{c1.scope,c2.scope},b.slice},system.slice}
    // plus a regular file and a symlink to a directory, neither of which is a cgroup.
    for (const char* dir : {"kubepods.slice/a.slice/c1.scope", "kubepods.slice/a.slice/c2.scope",
                            "kubepods.slice/b.slice", "system.slice"}) {
      fs::create_directories(fs::path(root_) / dir);
    }
    std::ofstream(fs::path(root_) / "kubepods.slice" / "cgroup.procs") << "1\n";
    fs::create_directory_symlink(fs::path(root_) / "system.slice",
                                 fs::path(root_) / "kubepods.slice" / "link");
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  std::uint64_t Id(const std::string& rel) {
    Result<std::uint64_t> id = CgroupIdOfPath(root_ + rel);
    EXPECT_TRUE(id.ok()) << rel;
    return id.ok() ? id.value() : 0;
  }

  std::string root_;
};

TEST_F(HierarchyTest, CgroupIdIsInodeNumber) {
  Result<std::uint64_t> id = CgroupIdOfPath(root_ + "/kubepods.slice");
  ASSERT_TRUE(id.ok()) << id.error().message;
  struct stat st {};
  ASSERT_EQ(::stat((root_ + "/kubepods.slice").c_str(), &st), 0);
  EXPECT_EQ(id.value(), static_cast<std::uint64_t>(st.st_ino));
}

TEST_F(HierarchyTest, CgroupIdErrors) {
  Result<std::uint64_t> missing = CgroupIdOfPath(root_ + "/nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ENOENT);
  EXPECT_THAT(missing.error().message, HasSubstr("/nope"));
  Result<std::uint64_t> file = CgroupIdOfPath(root_ + "/kubepods.slice/cgroup.procs");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.error().code, ENOTDIR);
}

TEST_F(HierarchyTest, IndexHierarchyMapsEveryDirectory) {
  const auto index = IndexHierarchy(root_);
  EXPECT_THAT(index,
              UnorderedElementsAre(
                  Pair(Id(""), "/"), Pair(Id("/kubepods.slice"), "/kubepods.slice"),
                  Pair(Id("/kubepods.slice/a.slice"), "/kubepods.slice/a.slice"),
                  Pair(Id("/kubepods.slice/a.slice/c1.scope"), "/kubepods.slice/a.slice/c1.scope"),
                  Pair(Id("/kubepods.slice/a.slice/c2.scope"), "/kubepods.slice/a.slice/c2.scope"),
                  Pair(Id("/kubepods.slice/b.slice"), "/kubepods.slice/b.slice"),
                  Pair(Id("/system.slice"), "/system.slice")));
  // A trailing slash on the root changes nothing.
  EXPECT_EQ(IndexHierarchy(root_ + "/"), index);
}

TEST_F(HierarchyTest, IndexHierarchyIsBounded) {
  const auto index = IndexHierarchy(root_, 3);
  ASSERT_EQ(index.size(), 3u);
  // Breadth-first: the root and two of its children.
  EXPECT_EQ(index.at(Id("")), "/");
  EXPECT_TRUE(index.contains(Id("/kubepods.slice")));
  EXPECT_TRUE(index.contains(Id("/system.slice")));
  EXPECT_TRUE(IndexHierarchy(root_, 0).empty());
}

TEST_F(HierarchyTest, SubtreeIds) {
  const std::vector<std::uint64_t> ids = SubtreeIds(root_ + "/kubepods.slice/a.slice");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids.front(), Id("/kubepods.slice/a.slice"));  // the directory itself first
  EXPECT_THAT(ids, UnorderedElementsAre(Id("/kubepods.slice/a.slice"),
                                        Id("/kubepods.slice/a.slice/c1.scope"),
                                        Id("/kubepods.slice/a.slice/c2.scope")));
  EXPECT_EQ(SubtreeIds(root_).size(), 7u);
  EXPECT_EQ(SubtreeIds(root_, 4).size(), 4u);
  EXPECT_THAT(SubtreeIds(root_ + "/system.slice"), ElementsAre(Id("/system.slice")));
}

TEST_F(HierarchyTest, MissingOrNonDirectoryRoot) {
  EXPECT_TRUE(IndexHierarchy(root_ + "/nope").empty());
  EXPECT_TRUE(SubtreeIds(root_ + "/nope").empty());
  EXPECT_TRUE(SubtreeIds(root_ + "/kubepods.slice/cgroup.procs").empty());
}

// On a real cgroup mount the walk must agree with CgroupIdOfPath as well.
TEST(RealHierarchyTest, IndexesLiveCgroupMount) {
  Result<CgroupMounts> mounts = ReadMounts();
  ASSERT_TRUE(mounts.ok()) << mounts.error().message;
  std::string root = mounts->v2_root;
  if (root.empty() && !mounts->v1_roots.empty()) root = mounts->v1_roots.begin()->second;
  if (root.empty()) GTEST_SKIP() << "no cgroup hierarchy mounted";
  Result<std::uint64_t> root_id = CgroupIdOfPath(root);
  ASSERT_TRUE(root_id.ok()) << root_id.error().message;
  const auto index = IndexHierarchy(root, 1000);
  ASSERT_FALSE(index.empty());
  EXPECT_LE(index.size(), 1000u);
  ASSERT_TRUE(index.contains(root_id.value()));
  EXPECT_EQ(index.at(root_id.value()), "/");
}


// /proc/PID/cgroup read inside a private cgroup namespace, back to hierarchy paths.
TEST(CgroupNamespace, JoinNsPath) {
  EXPECT_EQ(JoinNsPath("/", "/kubepods/a"), "/kubepods/a");
  EXPECT_EQ(JoinNsPath("/kubepods/burstable/podA/c1", "/"), "/kubepods/burstable/podA/c1");
  EXPECT_EQ(JoinNsPath("/kubepods/burstable/podA/c1", "/../../podB/c2"),
            "/kubepods/burstable/podB/c2");
  EXPECT_EQ(JoinNsPath("/a", "/../../../x"), "/x");  // not above the hierarchy root
  EXPECT_EQ(JoinNsPath("/a/", "/b/"), "/a/b");
  EXPECT_EQ(JoinNsPath("", ""), "/");
}

}  // namespace
}  // namespace isoscope::identity
