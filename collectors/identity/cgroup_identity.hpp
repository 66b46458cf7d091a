// Cgroup identity: which Kubernetes pod / container a cgroup belongs to, and
// where the cgroup hierarchies live on this host.
//
// Three layers, all free of BPF so they can be unit-tested without root:
//   1. ParseCgroupPath: cgroup path -> {pod uid, container id, runtime, QoS}.
//      Understands the kubelet cgroupfs and systemd drivers for containerd,
//      CRI-O and Docker (dockershim / cri-dockerd), plain Docker, and paths
//      nested under a prefix (/sys/fs/cgroup/<ctrl>/..., kind nodes, ...).
//   2. ParseProcCgroup / ReadProcCgroup: the /proc/PID/cgroup file.
//   3. ParseMountinfo / ReadMounts and the id <-> path helpers: where cgroup1
//      and cgroup2 are mounted, and the kernfs id (= inode number) of each
//      cgroup directory, which is what bpf_get_current_cgroup_id() returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/result.hpp"

namespace isoscope::identity {

// ---- workload identity from a cgroup path -----------------------------------

enum class Runtime { kUnknown, kContainerd, kCrio, kDocker };
enum class QosClass { kUnknown, kGuaranteed, kBurstable, kBestEffort };

// "containerd", "cri-o", "docker"; "" for kUnknown.
std::string_view RuntimeName(Runtime runtime);
// "guaranteed", "burstable", "besteffort"; "" for kUnknown.
std::string_view QosName(QosClass qos);

struct WorkloadIdentity {
  std::string pod_uid;       // canonical dashed lower-case form 8-4-4-4-12, empty if none
  std::string container_id;  // 64 lower-case hex chars, empty if none
  Runtime runtime = Runtime::kUnknown;
  QosClass qos = QosClass::kUnknown;  // set only when pod_uid is set
  bool empty() const { return pod_uid.empty() && container_id.empty(); }
};

// Parses one cgroup path (as in /proc/PID/cgroup, relative to a hierarchy
// root, or absolute under /sys/fs/cgroup/...). Never fails: anything not
// recognised yields an empty identity.
//
// Notes on what comes back:
//  - A bare 64-hex container directory under a cgroupfs-driver pod
//    (/kubepods/.../pod<uid>/<id>) is written the same way by containerd and
//    by Docker (dockershim / cri-dockerd), so its runtime is kUnknown.
//  - The pause (sandbox) container is reported like any other container.
//  - A path that ends at the pod (or continues with something that is not a
//    valid container) gives the pod uid and QoS with no container id.
//  - When several containers appear (Docker-in-Docker, kind nodes), the one
//    inside the innermost pod wins; without a pod, the outermost container.
WorkloadIdentity ParseCgroupPath(std::string_view path);

// The canonical (dashed, lower-case) form of a pod UID as the kubelet writes it in cgroup paths
// (with or without dashes, underscores in systemd slices); "" if it is not a UID.
std::string CanonicalPodUid(const std::string& uid);

// ---- /proc/PID/cgroup ---------------------------------------------------------

struct ProcCgroups {
  std::string v2_path;                          // the "0::<path>" line, empty if absent
  std::map<std::string, std::string> v1_paths;  // controller -> path; "name=systemd" kept as-is
};

// Parses the content of /proc/PID/cgroup ("hierarchy-id:controllers:path"
// lines). A line "4:cpu,cpuacct:/x" gives both "cpu" and "cpuacct". Fails on
// a malformed line.
Result<ProcCgroups> ParseProcCgroup(std::string_view content);
// Reads and parses /proc/<pid>/cgroup. Fails with "process <pid> not found"
// when the process does not exist (any more).
Result<ProcCgroups> ReadProcCgroup(int pid);

// ---- cgroup mounts -------------------------------------------------------------

enum class CgroupMode { kV1, kV2, kHybrid, kNone };
// "v1", "v2", "hybrid", "none".
std::string_view CgroupModeName(CgroupMode mode);

struct CgroupMounts {
  std::string v2_root;                          // mount point of cgroup2, empty if none
  std::map<std::string, std::string> v1_roots;  // controller -> mount point ("name=systemd" kept)

  // kNone: nothing mounted; kV1: cgroup1 only; kV2: cgroup2 and no cgroup1
  // controller (a lone named hierarchy such as name=systemd does not count);
  // kHybrid: cgroup2 plus at least one cgroup1 controller.
  CgroupMode mode() const;  // NOLINT(readability-identifier-naming): accessor-style name
};

// Parses /proc/self/mountinfo content (fstype and super options after " - ").
// Fails on a malformed line.
Result<CgroupMounts> ParseMountinfo(std::string_view content);
// Reads and parses /proc/self/mountinfo.
Result<CgroupMounts> ReadMounts();

// ---- cgroup namespaces ---------------------------------------------------------------------

// /proc/PID/cgroup paths are relative to the reading process's cgroup namespace root. In a private
// namespace (a container's, e.g. `isoscope trace` exec'd in the agent's pod on a cgroup v2 node)
// a process outside it reads "/../../kubepods/..." and one inside it "/", while the hierarchy
// mounted from the host (the DaemonSet's /sys/fs/cgroup) is the whole tree.

// The hierarchy path of `ns_path` read in a namespace whose root is `ns_root` (both relative to
// the hierarchy root): ns_root + ns_path, "." and ".." resolved ("/a/b" + "/../c" = "/a/c").
std::string JoinNsPath(const std::string& ns_root, const std::string& ns_path);

// This process's cgroup namespace roots, relative to the mounted hierarchies: "/" for each when
// what it reads for itself in /proc/self/cgroup is where it sits in the hierarchy (found by
// walking it for this pid; once, cached), else the difference of the two.
struct NsRoots {
  bool private_ns = false;
  std::string v2 = "/";
  std::string v1_cpu = "/";
};
const NsRoots& SelfNsRoots(const CgroupMounts& mounts);

// `cg` (from ReadProcCgroup) with the v2 and v1 cpu paths made relative to their hierarchy roots.
ProcCgroups ToHierarchyPaths(ProcCgroups cg, const CgroupMounts& mounts);

// ---- cgroup ids <-> paths ------------------------------------------------------

// The kernfs id of a cgroup directory, which is its inode number (on 64-bit
// kernels since 5.5 the inode number is the full 64-bit kernfs node id).
Result<std::uint64_t> CgroupIdOfPath(const std::string& dir);

// Walks a hierarchy root and returns id -> path relative to the root ("/" for
// the root itself, "/a/b" below it). Breadth-first; stops after max_entries
// directories. Directories that vanish or cannot be read are skipped.
std::unordered_map<std::uint64_t, std::string> IndexHierarchy(const std::string& root,
                                                              std::size_t max_entries = 100000);

// All cgroup ids of `dir` and its descendant directories (dir's own id first),
// at most max_entries of them. Empty if dir does not exist.
std::vector<std::uint64_t> SubtreeIds(const std::string& dir, std::size_t max_entries = 100000);

// ---- a workload's cgroup directories ----------------------------------------------------------

// The directories (absolute) of one workload in the v2 hierarchy and in the v1 cpu hierarchy;
// either is empty where the hierarchy is absent or holds no such cgroup.
struct WorkloadDirs {
  std::string v2_dir;
  std::string v1_cpu_dir;
  bool empty() const { return v2_dir.empty() && v1_cpu_dir.empty(); }
};

// `path` (absolute) relative to the hierarchy mounted at `root`: "/" for the root itself, "" when
// it is not below root.
std::string RelativeTo(const std::string& path, const std::string& root);

// The pod-level cgroup of a pod UID (the directory ParseCgroupPath reads as that pod with no
// container: /kubepods/<qos>/pod<uid>, kubepods-<qos>-pod<uid>.slice, ...), found by walking the
// hierarchies; its subtree holds every container of the pod, restarted ones included.
WorkloadDirs FindPodDirs(const CgroupMounts& mounts, const std::string& pod_uid);
// The cgroup of one container id (the directory ParseCgroupPath reads as that container).
WorkloadDirs FindContainerDirs(const CgroupMounts& mounts, const std::string& container_id);

}  // namespace isoscope::identity
