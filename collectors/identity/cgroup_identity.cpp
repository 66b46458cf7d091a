#include "collectors/identity/cgroup_identity.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <deque>
#include <filesystem>
#include <optional>
#include <system_error>
#include <utility>

#include <fmt/format.h>

namespace isoscope::identity {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kContainerIdLen = 64;
constexpr std::size_t kPodUidHexLen = 32;
// Length of the dashed form 8-4-4-4-12 and the positions of its separators.
constexpr std::size_t kPodUidDashedLen = 36;
constexpr std::array<std::size_t, 4> kPodUidSeparators = {8, 13, 18, 23};

// ---- small string helpers ------------------------------------------------------

bool IsHexDigit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

char ToLowerAscii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Splits on `sep`, keeping empty fields ("a,,b" -> "a", "", "b").
std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t pos = s.find(sep, start);
    if (pos == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

// Path components, dropping the empty ones produced by leading, trailing and
// doubled slashes.
std::vector<std::string_view> PathComponents(std::string_view path) {
  std::vector<std::string_view> out;
  for (std::string_view part : Split(path, '/')) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

// Lines without their terminator; a trailing newline does not make an extra line.
std::vector<std::string_view> Lines(std::string_view content) {
  std::vector<std::string_view> lines = Split(content, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

bool ConsumePrefix(std::string_view& s, std::string_view prefix) {
  if (!s.starts_with(prefix)) return false;
  s.remove_prefix(prefix.size());
  return true;
}

bool ConsumeSuffix(std::string_view& s, std::string_view suffix) {
  if (!s.ends_with(suffix)) return false;
  s.remove_suffix(suffix.size());
  return true;
}

// ---- id / uid validation ---------------------------------------------------------

// Exactly 64 hex digits -> lower-case copy.
std::optional<std::string> NormalizeContainerId(std::string_view s) {
  if (s.size() != kContainerIdLen) return std::nullopt;
  std::string id;
  id.reserve(kContainerIdLen);
  for (char c : s) {
    if (!IsHexDigit(c)) return std::nullopt;
    id.push_back(ToLowerAscii(c));
  }
  return id;
}

// Accepts 32 hex digits, either run together (static pods: the uid is the
// config hash) or as 8-4-4-4-12 groups separated by '-' (cgroupfs driver) or
// '_' (systemd driver, which reserves '-' for slice nesting). Returns the
// canonical dashed lower-case form.
std::optional<std::string> NormalizePodUid(std::string_view s) {
  std::string hex;
  hex.reserve(kPodUidHexLen);
  if (s.size() == kPodUidHexLen) {
    for (char c : s) {
      if (!IsHexDigit(c)) return std::nullopt;
      hex.push_back(ToLowerAscii(c));
    }
  } else if (s.size() == kPodUidDashedLen) {
    const char sep = s[kPodUidSeparators[0]];
    if (sep != '-' && sep != '_') return std::nullopt;
    std::size_t next_sep = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (next_sep < kPodUidSeparators.size() && i == kPodUidSeparators[next_sep]) {
        if (s[i] != sep) return std::nullopt;  // separators must all be the same
        ++next_sep;
        continue;
      }
      if (!IsHexDigit(s[i])) return std::nullopt;
      hex.push_back(ToLowerAscii(s[i]));
    }
  } else {
    return std::nullopt;
  }
  return fmt::format("{}-{}-{}-{}-{}", hex.substr(0, 8), hex.substr(8, 4), hex.substr(12, 4),
                     hex.substr(16, 4), hex.substr(20));
}

// ---- path component recognisers ------------------------------------------------

struct PodMatch {
  std::string uid;
  QosClass qos = QosClass::kUnknown;
};

struct ContainerMatch {
  std::string id;
  Runtime runtime = Runtime::kUnknown;
};

std::optional<QosClass> QosLevel(std::string_view name) {
  if (name == "burstable") return QosClass::kBurstable;
  if (name == "besteffort") return QosClass::kBestEffort;
  return std::nullopt;
}

// "pod<uid>" -> uid.
std::optional<std::string> PodDirUid(std::string_view name) {
  if (!ConsumePrefix(name, "pod")) return std::nullopt;
  return NormalizePodUid(name);
}

// A systemd-driver pod slice: "[<prefix>-]kubepods[-<qos>]-pod<uid>.slice", e.g.
// "kubepods-burstable-pod6f2b1f6e_9a3c_4b8e_8d2f_0c1e2a3b4c5d.slice", or in kind
// nodes (kubelet --cgroup-root=/kubelet) "kubelet-kubepods-pod<uid>.slice".
// systemd encodes nesting with '-', so every ancestor slice name is a prefix.
// Slices without a pod (kubepods.slice, kubepods-besteffort.slice) give nullopt.
std::optional<PodMatch> ParsePodSlice(std::string_view name) {
  if (!ConsumeSuffix(name, ".slice")) return std::nullopt;
  const std::vector<std::string_view> parts = Split(name, '-');
  std::size_t i = 0;
  while (i < parts.size() && parts[i] != "kubepods") ++i;
  if (i == parts.size()) return std::nullopt;
  ++i;
  PodMatch match{.uid = {}, .qos = QosClass::kGuaranteed};  // no QoS level = guaranteed
  if (i < parts.size()) {
    if (auto qos = QosLevel(parts[i])) {
      match.qos = *qos;
      ++i;
    }
  }
  if (i + 1 != parts.size()) return std::nullopt;  // exactly one part left: pod<uid>
  auto uid = PodDirUid(parts[i]);
  if (!uid) return std::nullopt;
  match.uid = std::move(*uid);
  return match;
}

// A container cgroup directory name:
//   cri-containerd-<id>.scope    containerd, systemd driver
//   crio-<id>.scope, crio-<id>   CRI-O, systemd / cgroupfs driver
//   crio-conmon-<id>[.scope]     CRI-O's conmon monitor for container <id>
//   docker-<id>.scope            Docker, systemd driver
//   <id>                         containerd or Docker, cgroupfs driver (only if allow_bare_id)
std::optional<ContainerMatch> ParseContainerDir(std::string_view name, bool allow_bare_id) {
  struct Prefix {
    std::string_view text;
    Runtime runtime;
  };
  // "crio-conmon-" must be tried before "crio-".
  static constexpr std::array<Prefix, 4> kPrefixes = {{
      {"cri-containerd-", Runtime::kContainerd},
      {"crio-conmon-", Runtime::kCrio},
      {"crio-", Runtime::kCrio},
      {"docker-", Runtime::kDocker},
  }};
  const bool is_scope = ConsumeSuffix(name, ".scope");
  for (const Prefix& prefix : kPrefixes) {
    std::string_view rest = name;
    if (!ConsumePrefix(rest, prefix.text)) continue;
    auto id = NormalizeContainerId(rest);
    if (!id) return std::nullopt;
    return ContainerMatch{std::move(*id), prefix.runtime};
  }
  if (!allow_bare_id || is_scope) return std::nullopt;
  auto id = NormalizeContainerId(name);
  if (!id) return std::nullopt;
  return ContainerMatch{std::move(*id), Runtime::kUnknown};
}

// runc's systemd cgroupsPath notation "<slice>:<prefix>:<id>", e.g.
// "kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>". It shows up as a
// literal directory name when runc falls back to cgroupfs (seen under
// /system.slice/containerd.service/ on some kind and k3s nodes).
struct ColonMatch {
  PodMatch pod;
  std::optional<ContainerMatch> container;
};

std::optional<ColonMatch> ParseColonForm(std::string_view name) {
  const std::vector<std::string_view> fields = Split(name, ':');
  if (fields.size() != 3) return std::nullopt;
  auto pod = ParsePodSlice(fields[0]);
  if (!pod) return std::nullopt;
  ColonMatch match{.pod = std::move(*pod), .container = std::nullopt};
  Runtime runtime = Runtime::kUnknown;
  if (fields[1] == "cri-containerd") {
    runtime = Runtime::kContainerd;
  } else if (fields[1] == "crio") {
    runtime = Runtime::kCrio;
  } else if (fields[1] == "docker") {
    runtime = Runtime::kDocker;
  }
  auto id = NormalizeContainerId(fields[2]);
  if (runtime != Runtime::kUnknown && id) match.container = ContainerMatch{std::move(*id), runtime};
  return match;
}

// ---- files -----------------------------------------------------------------------

// Reads a whole file with plain read(2): /proc files report size 0, and we
// want errno for the caller.
Result<std::string> ReadWholeFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return Error{fmt::format("open {}: {}", path, std::strerror(err)), err};
  }
  std::string content;
  std::array<char, 4096> buf;
  while (true) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n == 0) break;
    if (n < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      ::close(fd);
      return Error{fmt::format("read {}: {}", path, std::strerror(err)), err};
    }
    content.append(buf.data(), static_cast<std::size_t>(n));
  }
  ::close(fd);
  return content;
}

// mountinfo escapes space, tab, newline and backslash in paths as \ooo octal.
std::string UnescapeMountinfo(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string_view digits = s.substr(i + 1, 3);
      int value = 0;
      bool octal = true;
      for (char c : digits) {
        if (c < '0' || c > '7') {
          octal = false;
          break;
        }
        value = value * 8 + (c - '0');
      }
      if (octal && value < 256) {
        out.push_back(static_cast<char>(value));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// cgroup1 super options that are not controllers.
bool IsCgroup1Option(std::string_view option) {
  static constexpr std::array<std::string_view, 10> kOptions = {
      "rw",       "ro",   "noprefix", "clone_children", "xattr", "cpuset_v2_mode", "favordynmods",
      "seclabel", "none", "all"};
  for (std::string_view known : kOptions) {
    if (option == known) return true;
  }
  // Valued options (release_agent=...) are not controllers; named hierarchies are.
  return option.find('=') != std::string_view::npos && !option.starts_with("name=");
}

// ---- hierarchy walk ----------------------------------------------------------------

// Visits `root` and its descendant directories breadth-first, calling
// visit(inode, relative_path) for at most max_entries of them. Never throws:
// entries that vanish mid-walk (cgroups come and go) or cannot be opened are
// skipped. Symlinks are not followed (cgroupfs has none, and it rules out cycles).
template <typename Visit>
void WalkDirectories(const std::string& root, std::size_t max_entries, Visit&& visit) {
  struct Pending {
    fs::path path;
    std::string rel;
  };
  std::deque<Pending> queue;
  queue.push_back({fs::path(root), "/"});
  std::size_t visited = 0;
  while (!queue.empty() && visited < max_entries) {
    Pending dir = std::move(queue.front());
    queue.pop_front();
    struct stat st {};
    if (::lstat(dir.path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    visit(static_cast<std::uint64_t>(st.st_ino), dir.rel);
    ++visited;

    std::error_code ec;
    fs::directory_iterator it(dir.path, ec);
    const fs::directory_iterator end;
    for (; !ec && it != end; it.increment(ec)) {
      // Enough queued to reach the bound: no need to remember more.
      if (visited + queue.size() >= max_entries) break;
      std::error_code type_ec;
      if (!fs::is_directory(it->symlink_status(type_ec))) continue;
      std::string rel = dir.rel == "/" ? "" : dir.rel;
      rel += '/';
      rel += it->path().filename().string();
      queue.push_back({it->path(), std::move(rel)});
    }
  }
}

}  // namespace

// ---- names ---------------------------------------------------------------------------

std::string_view RuntimeName(Runtime runtime) {
  switch (runtime) {
    case Runtime::kContainerd:
      return "containerd";
    case Runtime::kCrio:
      return "cri-o";
    case Runtime::kDocker:
      return "docker";
    case Runtime::kUnknown:
      break;
  }
  return "";
}

std::string_view QosName(QosClass qos) {
  switch (qos) {
    case QosClass::kGuaranteed:
      return "guaranteed";
    case QosClass::kBurstable:
      return "burstable";
    case QosClass::kBestEffort:
      return "besteffort";
    case QosClass::kUnknown:
      break;
  }
  return "";
}

std::string_view CgroupModeName(CgroupMode mode) {
  switch (mode) {
    case CgroupMode::kV1:
      return "v1";
    case CgroupMode::kV2:
      return "v2";
    case CgroupMode::kHybrid:
      return "hybrid";
    case CgroupMode::kNone:
      break;
  }
  return "none";
}

// ---- ParseCgroupPath -------------------------------------------------------------------

WorkloadIdentity ParseCgroupPath(std::string_view path) {
  const std::vector<std::string_view> parts = PathComponents(path);
  const std::size_t n = parts.size();

  // Pass 1: the innermost pod cgroup. Innermost, because a kind node or a
  // Docker-in-Docker setup nests a whole pod hierarchy inside a container.
  std::optional<PodMatch> pod;
  std::size_t pod_index = 0;
  std::optional<ContainerMatch> colon_container;  // container named in the pod component itself
  for (std::size_t i = 0; i < n; ++i) {
    if (parts[i] == "kubepods") {
      // cgroupfs driver: kubepods/[burstable|besteffort/]pod<uid>
      std::size_t j = i + 1;
      QosClass qos = QosClass::kGuaranteed;
      if (j < n) {
        if (auto level = QosLevel(parts[j])) {
          qos = *level;
          ++j;
        }
      }
      if (j < n) {
        if (auto uid = PodDirUid(parts[j])) {
          pod = PodMatch{std::move(*uid), qos};
          pod_index = j;
          colon_container.reset();
        }
      }
    } else if (auto slice = ParsePodSlice(parts[i])) {
      // systemd driver: ...kubepods[-<qos>]-pod<uid>.slice
      pod = std::move(*slice);
      pod_index = i;
      colon_container.reset();
    } else if (auto colon = ParseColonForm(parts[i])) {
      pod = std::move(colon->pod);
      pod_index = i;
      colon_container = std::move(colon->container);
    }
  }

  WorkloadIdentity identity;
  if (pod) {
    identity.pod_uid = std::move(pod->uid);
    identity.qos = pod->qos;
    std::optional<ContainerMatch> container = std::move(colon_container);
    // The container is the pod cgroup's direct child; anything deeper is a
    // sub-cgroup the container made for itself and still belongs to it.
    if (!container && pod_index + 1 < n) {
      container = ParseContainerDir(parts[pod_index + 1], /*allow_bare_id=*/true);
    }
    if (container) {
      identity.container_id = std::move(container->id);
      identity.runtime = container->runtime;
    }
    return identity;
  }

  // Pass 2: no pod. A container outside Kubernetes (plain Docker, or CRI-O's
  // conmon in system.slice); the outermost one is the one the host runtime knows.
  for (std::size_t i = 0; i < n; ++i) {
    std::optional<ContainerMatch> container;
    if (parts[i] == "docker" && i + 1 < n) {
      // Docker, cgroupfs driver: /docker/<id>
      if (auto id = NormalizeContainerId(parts[i + 1])) {
        container = ContainerMatch{std::move(*id), Runtime::kDocker};
      }
    }
    if (!container) container = ParseContainerDir(parts[i], /*allow_bare_id=*/false);
    if (container) {
      identity.container_id = std::move(container->id);
      identity.runtime = container->runtime;
      return identity;
    }
  }
  return identity;
}

// ---- /proc/PID/cgroup --------------------------------------------------------------------

Result<ProcCgroups> ParseProcCgroup(std::string_view content) {
  ProcCgroups result;
  const std::vector<std::string_view> lines = Lines(content);
  for (std::size_t line_no = 0; line_no < lines.size(); ++line_no) {
    const std::string_view line = lines[line_no];
    auto malformed = [&](std::string_view why) {
      return MakeError("malformed cgroup line {} ({}): '{}'", line_no + 1, why, line);
    };
    // "hierarchy-id:controller-list:path"; the path itself may contain ':'.
    const std::size_t first = line.find(':');
    const std::size_t second =
        first == std::string_view::npos ? std::string_view::npos : line.find(':', first + 1);
    if (second == std::string_view::npos) return malformed("expected id:controllers:path");
    const std::string_view id_text = line.substr(0, first);
    const std::string_view controllers = line.substr(first + 1, second - first - 1);
    std::string_view path = line.substr(second + 1);

    unsigned hierarchy_id = 0;
    const auto [end, ec] =
        std::from_chars(id_text.data(), id_text.data() + id_text.size(), hierarchy_id);
    if (id_text.empty() || ec != std::errc() || end != id_text.data() + id_text.size()) {
      return malformed("bad hierarchy id");
    }
    // cgroup2 marks a cgroup removed while a (zombie) member still points at it.
    ConsumeSuffix(path, " (deleted)");
    if (!path.starts_with('/')) return malformed("path is not absolute");

    if (hierarchy_id == 0) {
      if (!controllers.empty()) return malformed("hierarchy 0 with controllers");
      result.v2_path = std::string(path);
      continue;
    }
    if (controllers.empty()) return malformed("cgroup1 hierarchy without controllers");
    for (std::string_view controller : Split(controllers, ',')) {
      if (controller.empty()) return malformed("empty controller name");
      result.v1_paths[std::string(controller)] = std::string(path);
    }
  }
  return result;
}

Result<ProcCgroups> ReadProcCgroup(int pid) {
  if (pid <= 0) return MakeError("invalid pid {}", pid);
  const std::string path = fmt::format("/proc/{}/cgroup", pid);
  Result<std::string> content = ReadWholeFile(path);
  if (!content.ok()) {
    const int err = content.error().code;
    // ENOENT: no such process; ESRCH: it exited between open and read.
    if (err == ENOENT || err == ESRCH) return Error{fmt::format("process {} not found", pid), err};
    return content.error();
  }
  Result<ProcCgroups> parsed = ParseProcCgroup(content.value());
  if (!parsed.ok()) return parsed.error().Wrap(path);
  return parsed;
}

// ---- cgroup namespaces ----------------------------------------------------------------------

std::string JoinNsPath(const std::string& ns_root, const std::string& ns_path) {
  std::filesystem::path p("/");
  for (const std::string* part : {&ns_root, &ns_path}) {
    const auto start = part->find_first_not_of('/');
    if (start != std::string::npos) p /= part->substr(start);
  }
  // Lexically: "/a/b/../c" -> "/a/c"; ".." above the root stays at the root.
  std::string out = p.lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

namespace {

// The path (relative to `root`) of the cgroup whose cgroup.procs lists `pid`; "" if none.
std::string FindProcessCgroup(const std::string& root, int pid) {
  if (root.empty()) return {};
  for (const auto& [id, rel] : IndexHierarchy(root)) {
    auto procs = ReadWholeFile(root + (rel == "/" ? "" : rel) + "/cgroup.procs");
    if (!procs) continue;
    for (const auto& line : Split(procs.value(), '\n')) {
      int p = 0;
      if (std::from_chars(line.data(), line.data() + line.size(), p).ec == std::errc() && p == pid) {
        return rel;
      }
    }
  }
  return {};
}

// The namespace root from where this process sits in the hierarchy (`host_path`) and what it
// reads for itself (`ns_path`): host_path with ns_path's components taken off its end.
std::string NsRootOf(const std::string& host_path, const std::string& ns_path) {
  if (host_path.empty()) return "/";
  const std::string own = JoinNsPath("/", ns_path);
  if (own == "/") return host_path;
  if (host_path.size() > own.size() && host_path.ends_with(own)) {
    return JoinNsPath("/", host_path.substr(0, host_path.size() - own.size()));
  }
  return host_path;
}

}  // namespace

const NsRoots& SelfNsRoots(const CgroupMounts& mounts) {
  // Where this process sits in each mounted hierarchy (found by its pid in cgroup.procs) against
  // what it reads for itself: equal outside a private namespace. (Comparing /proc/self/ns/cgroup
  // with pid 1's needs ptrace access to pid 1, which a container may not have.)
  static const NsRoots roots = [&] {
    NsRoots r;
    auto own = ReadProcCgroup(getpid());
    if (!own) return r;
    if (!mounts.v2_root.empty() && !own->v2_path.empty()) {
      const std::string host = FindProcessCgroup(mounts.v2_root, getpid());
      if (!host.empty() && host != JoinNsPath("/", own->v2_path)) {
        r.v2 = NsRootOf(host, own->v2_path);
        r.private_ns = true;
      }
    }
    const auto cpu = mounts.v1_roots.find("cpu");
    const auto path = own->v1_paths.find("cpu");
    if (cpu != mounts.v1_roots.end() && path != own->v1_paths.end()) {
      const std::string host = FindProcessCgroup(cpu->second, getpid());
      if (!host.empty() && host != JoinNsPath("/", path->second)) {
        r.v1_cpu = NsRootOf(host, path->second);
        r.private_ns = true;
      }
    }
    return r;
  }();
  return roots;
}

ProcCgroups ToHierarchyPaths(ProcCgroups cg, const CgroupMounts& mounts) {
  const NsRoots& roots = SelfNsRoots(mounts);
  if (!roots.private_ns) return cg;
  if (!cg.v2_path.empty()) cg.v2_path = JoinNsPath(roots.v2, cg.v2_path);
  for (const char* name : {"cpu", "cpuacct"}) {
    if (auto it = cg.v1_paths.find(name); it != cg.v1_paths.end()) {
      it->second = JoinNsPath(roots.v1_cpu, it->second);
    }
  }
  return cg;
}

// ---- mounts ----------------------------------------------------------------------------------

CgroupMode CgroupMounts::mode() const {
  bool has_v1_controller = false;
  for (const auto& [controller, mount_point] : v1_roots) {
    if (!controller.starts_with("name=")) has_v1_controller = true;
  }
  if (!v2_root.empty()) return has_v1_controller ? CgroupMode::kHybrid : CgroupMode::kV2;
  return v1_roots.empty() ? CgroupMode::kNone : CgroupMode::kV1;
}

Result<CgroupMounts> ParseMountinfo(std::string_view content) {
  CgroupMounts mounts;
  // A hierarchy may be mounted more than once (bind mounts of a sub-cgroup
  // into containers, for instance). Prefer the first mount of the hierarchy's
  // root ("/" in field 4), else the first mount seen.
  bool v2_is_root_mount = false;
  std::map<std::string, bool> v1_is_root_mount;

  const std::vector<std::string_view> lines = Lines(content);
  for (std::size_t line_no = 0; line_no < lines.size(); ++line_no) {
    const std::string_view line = lines[line_no];
    // id parent major:minor root mount-point options [optional...] - fstype source super-options
    const std::vector<std::string_view> fields = Split(line, ' ');
    std::size_t sep = 6;
    while (sep < fields.size() && fields[sep] != "-") ++sep;
    if (sep + 3 >= fields.size()) {
      return MakeError("malformed mountinfo line {}: '{}'", line_no + 1, line);
    }
    const std::string_view fstype = fields[sep + 1];
    if (fstype != "cgroup" && fstype != "cgroup2") continue;

    const bool is_root_mount = fields[3] == "/";
    std::string mount_point = UnescapeMountinfo(fields[4]);
    if (fstype == "cgroup2") {
      if (mounts.v2_root.empty() || (is_root_mount && !v2_is_root_mount)) {
        mounts.v2_root = std::move(mount_point);
        v2_is_root_mount = is_root_mount;
      }
      continue;
    }
    for (std::string_view option : Split(fields[sep + 3], ',')) {
      if (option.empty() || IsCgroup1Option(option)) continue;
      const std::string controller(option);
      auto it = mounts.v1_roots.find(controller);
      if (it == mounts.v1_roots.end() || (is_root_mount && !v1_is_root_mount[controller])) {
        mounts.v1_roots[controller] = mount_point;
        v1_is_root_mount[controller] = is_root_mount;
      }
    }
  }
  return mounts;
}

Result<CgroupMounts> ReadMounts() {
  static constexpr const char* kPath = "/proc/self/mountinfo";
  Result<std::string> content = ReadWholeFile(kPath);
  if (!content.ok()) return content.error();
  Result<CgroupMounts> parsed = ParseMountinfo(content.value());
  if (!parsed.ok()) return parsed.error().Wrap(kPath);
  return parsed;
}

// ---- ids <-> paths ---------------------------------------------------------------------------

Result<std::uint64_t> CgroupIdOfPath(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    const int err = errno;
    return Error{fmt::format("stat {}: {}", dir, std::strerror(err)), err};
  }
  if (!S_ISDIR(st.st_mode)) return Error{fmt::format("{}: not a directory", dir), ENOTDIR};
  return static_cast<std::uint64_t>(st.st_ino);
}

std::unordered_map<std::uint64_t, std::string> IndexHierarchy(const std::string& root,
                                                              std::size_t max_entries) {
  std::unordered_map<std::uint64_t, std::string> index;
  WalkDirectories(root, max_entries,
                  [&](std::uint64_t id, const std::string& rel) { index.emplace(id, rel); });
  return index;
}

std::vector<std::uint64_t> SubtreeIds(const std::string& dir, std::size_t max_entries) {
  std::vector<std::uint64_t> ids;
  WalkDirectories(dir, max_entries,
                  [&](std::uint64_t id, const std::string&) { ids.push_back(id); });
  return ids;
}

namespace {

// The shortest directory (relative path) of a hierarchy whose identity satisfies `match`.
template <typename Match>
std::string FindDir(const std::string& root, Match match) {
  if (root.empty()) return {};
  std::string best;
  for (const auto& [id, rel] : IndexHierarchy(root)) {
    if (!match(ParseCgroupPath(rel))) continue;
    if (best.empty() || rel.size() < best.size()) best = rel;
  }
  return best.empty() ? std::string{} : root + best;
}

template <typename Match>
WorkloadDirs FindWorkloadDirs(const CgroupMounts& mounts, Match match) {
  WorkloadDirs dirs;
  dirs.v2_dir = FindDir(mounts.v2_root, match);
  if (auto cpu = mounts.v1_roots.find("cpu"); cpu != mounts.v1_roots.end()) {
    dirs.v1_cpu_dir = FindDir(cpu->second, match);
  }
  return dirs;
}

}  // namespace

std::string CanonicalPodUid(const std::string& uid) {
  return ParseCgroupPath("/kubepods/pod" + uid).pod_uid;
}

std::string RelativeTo(const std::string& path, const std::string& root) {
  if (root.empty() || path.rfind(root, 0) != 0) return {};
  std::string rest = path.substr(root.size());
  if (rest.empty()) return "/";
  return rest[0] == '/' ? rest : std::string{};
}

WorkloadDirs FindPodDirs(const CgroupMounts& mounts, const std::string& pod_uid) {
  const std::string uid = CanonicalPodUid(pod_uid);
  if (uid.empty()) return {};
  return FindWorkloadDirs(mounts, [&](const WorkloadIdentity& w) {
    return w.pod_uid == uid && w.container_id.empty();
  });
}

WorkloadDirs FindContainerDirs(const CgroupMounts& mounts, const std::string& container_id) {
  if (container_id.empty()) return {};
  return FindWorkloadDirs(
      mounts, [&](const WorkloadIdentity& w) { return w.container_id == container_id; });
}

}  // namespace isoscope::identity
