#include "collectors/network/socket_table.hpp"

#include <dirent.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include "common/fs.hpp"

namespace isoscope::network {
namespace {

template <typename T>
bool ParseHex(std::string_view text, T* out) {
  if (text.empty()) return false;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *out, 16);
  return ec == std::errc() && ptr == text.data() + text.size();
}

// Splits on runs of blanks.
std::vector<std::string_view> Fields(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

}  // namespace

std::optional<std::uint64_t> SocketInodeFromLink(std::string_view link) {
  constexpr std::string_view kPrefix = "socket:[";
  if (link.size() <= kPrefix.size() + 1 || link.substr(0, kPrefix.size()) != kPrefix ||
      link.back() != ']') {
    return std::nullopt;
  }
  const std::string_view digits = link.substr(kPrefix.size(), link.size() - kPrefix.size() - 1);
  std::uint64_t inode = 0;
  const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), inode);
  if (ec != std::errc() || ptr != digits.data() + digits.size()) return std::nullopt;
  return inode;
}

bool ParseProcAddress(std::string_view text, std::uint16_t family, std::uint8_t (&addr)[16],
                      std::uint16_t* port) {
  std::memset(addr, 0, sizeof(addr));
  const std::size_t colon = text.find(':');
  if (colon == std::string_view::npos) return false;
  const std::string_view hex = text.substr(0, colon);
  const std::size_t words = family == kAfInet ? 1 : family == kAfInet6 ? 4 : 0;
  if (words == 0 || hex.size() != words * 8) return false;
  for (std::size_t w = 0; w < words; ++w) {
    std::uint32_t v = 0;
    if (!ParseHex(hex.substr(w * 8, 8), &v)) return false;
    // The kernel prints each u32 of the wire-order address as loaded by the CPU: storing it back
    // in CPU order restores the wire bytes.
    std::memcpy(addr + w * 4, &v, 4);
  }
  const std::string_view port_hex = text.substr(colon + 1);
  if (port_hex.size() != 4) return false;
  return ParseHex(port_hex, port);
}

Result<std::vector<TcpSocket>> ParseProcNetTcp(std::string_view text, std::uint16_t family) {
  std::vector<TcpSocket> out;
  std::size_t line_no = 0;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_no;
    const std::vector<std::string_view> f = Fields(line);
    if (f.empty()) continue;
    if (line_no == 1 && f[0] == "sl") continue;  // header
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
    if (f.size() < 10 || f[0].back() != ':') {
      return MakeError("line {}: expected at least 10 fields \"sl: local remote st ... inode\"",
                       line_no);
    }
    TcpSocket s;
    std::uint8_t local[16];
    std::uint8_t remote[16];
    std::uint16_t lport = 0;
    std::uint16_t rport = 0;
    if (!ParseProcAddress(f[1], family, local, &lport) ||
        !ParseProcAddress(f[2], family, remote, &rport)) {
      return MakeError(R"(line {}: bad address "{}" or "{}")", line_no, f[1], f[2]);
    }
    if (!ParseHex(f[3], &s.state)) return MakeError("line {}: bad state \"{}\"", line_no, f[3]);
    const auto [ptr, ec] = std::from_chars(f[9].data(), f[9].data() + f[9].size(), s.inode);
    if (ec != std::errc() || ptr != f[9].data() + f[9].size()) {
      return MakeError("line {}: bad inode \"{}\"", line_no, f[9]);
    }
    s.flow = FlowFromTuple(family, local, lport, remote, rport);
    out.push_back(s);
  }
  return out;
}

Result<std::unordered_set<std::uint64_t>> SocketInodesOfPid(int pid, const std::string& proc) {
  const std::string dir = fmt::format("{}/{}/fd", proc, pid);
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    const int err = errno;
    return Error{fmt::format("list sockets of pid {}: open {}: {}", pid, dir, std::strerror(err)),
                 err};
  }
  std::unordered_set<std::uint64_t> inodes;
  while (const dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string path = dir + "/" + e->d_name;
    char buf[64];
    const ssize_t n = readlink(path.c_str(), buf, sizeof(buf));
    if (n <= 0 || static_cast<std::size_t>(n) >= sizeof(buf))
      continue;  // closed meanwhile, or
                 // not a socket (too long)
    if (auto inode = SocketInodeFromLink(std::string_view(buf, static_cast<std::size_t>(n)))) {
      inodes.insert(*inode);
    }
  }
  closedir(d);
  return inodes;
}

Result<std::vector<FlowKey>> TcpFlowsOfPids(const std::vector<int>& pids, const std::string& proc) {
  std::set<FlowKey> flows;
  for (const int pid : pids) {
    auto inodes = SocketInodesOfPid(pid, proc);
    if (!inodes) return inodes.error();
    if (inodes->empty()) continue;
    for (const auto& [name, family] : {std::pair{"tcp", kAfInet}, std::pair{"tcp6", kAfInet6}}) {
      const std::string path = fmt::format("{}/{}/net/{}", proc, pid, name);
      auto text = ReadFileText(path);
      if (!text) {
        if (family == kAfInet6 && text.error().code == ENOENT) continue;  // no IPv6
        return text.error().Wrap(fmt::format("read TCP sockets of pid {}", pid));
      }
      auto sockets = ParseProcNetTcp(*text, family);
      if (!sockets) return sockets.error().Wrap(fmt::format("parse {}", path));
      for (const TcpSocket& s : *sockets) {
        if (s.state != kTcpListen && s.flow.Valid() && inodes->count(s.inode) != 0) {
          flows.insert(s.flow);
        }
      }
    }
  }
  return std::vector<FlowKey>(flows.begin(), flows.end());
}

}  // namespace isoscope::network
