#include "correlator/peer_resolver.hpp"

#include <arpa/inet.h>
#include <unistd.h>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <unordered_set>

#include "collectors/network/socket_table.hpp"
#include "common/fs.hpp"

namespace isoscope::correlator {

std::optional<std::pair<std::uint16_t, network::Endpoint>> ParsePeerUri(std::string_view uri) {
  std::uint16_t family = 0;
  if (uri.rfind("ipv4:", 0) == 0) {
    family = network::kAfInet;
  } else if (uri.rfind("ipv6:", 0) == 0) {
    family = network::kAfInet6;
  } else {
    return std::nullopt;
  }
  uri.remove_prefix(5);
  const auto colon = uri.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string_view host = uri.substr(0, colon);
  const std::string_view port_text = uri.substr(colon + 1);
  unsigned port = 0;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 ||
      port > 65535) {
    return std::nullopt;
  }
  if (family == network::kAfInet6) {
    if (host.size() < 2 || host.front() != '[' || host.back() != ']') return std::nullopt;
    host = host.substr(1, host.size() - 2);
  }
  network::Endpoint ep;
  ep.port = static_cast<std::uint16_t>(port);
  const std::string h(host);
  if (inet_pton(family == network::kAfInet ? AF_INET : AF_INET6, h.c_str(), ep.addr.data()) != 1) {
    return std::nullopt;
  }
  // An IPv4-mapped IPv6 peer is an IPv4 flow (as collectors/network keys it).
  static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (family == network::kAfInet6 && std::memcmp(ep.addr.data(), kMapped, 12) == 0) {
    std::memmove(ep.addr.data(), ep.addr.data() + 12, 4);
    std::memset(ep.addr.data() + 4, 0, 12);
    family = network::kAfInet;
  }
  return std::make_pair(family, ep);
}

std::optional<std::uint32_t> PeerResolver::Lookup(std::uint16_t family,
                                                  const network::Endpoint& peer) const {
  std::unordered_set<std::uint64_t> inodes;
  for (const auto& [file, fam] :
       {std::pair{"/net/tcp", network::kAfInet}, std::pair{"/net/tcp6", network::kAfInet6}}) {
    auto text = ReadFileText(proc_ + file);
    if (!text) continue;  // no IPv6 table when IPv6 is off
    auto sockets = network::ParseProcNetTcp(*text, fam);
    if (!sockets) continue;
    for (const auto& s : *sockets) {
      if (s.flow.family != family || s.state == network::kTcpListen) continue;
      if (s.flow.lo == peer || s.flow.hi == peer) inodes.insert(s.inode);
    }
  }
  if (inodes.empty()) return std::nullopt;
  const auto self = static_cast<std::uint32_t>(getpid());
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(proc_, ec)) {
    const std::string name = entry.path().filename().string();
    std::uint32_t pid = 0;
    const auto [end, perr] = std::from_chars(name.data(), name.data() + name.size(), pid);
    if (perr != std::errc() || end != name.data() + name.size() || pid == self) continue;
    auto held = network::SocketInodesOfPid(static_cast<int>(pid), proc_);
    if (!held) continue;  // exited meanwhile, or not readable
    for (std::uint64_t inode : *held) {
      if (inodes.count(inode)) return pid;
    }
  }
  return std::nullopt;
}

std::optional<std::uint32_t> PeerResolver::Resolve(const std::string& uri) {
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find(uri);
    if (it != cache_.end() && now - it->second.at < ttl_) return it->second.pid;
  }
  const auto parsed = ParsePeerUri(uri);
  const std::optional<std::uint32_t> pid =
      parsed ? Lookup(parsed->first, parsed->second) : std::nullopt;
  std::lock_guard<std::mutex> lock(mu_);
  if (cache_.size() >= kMaxEntries) cache_.clear();  // bounded; a miss only costs a lookup
  cache_[uri] = {pid, now};
  return pid;
}

}  // namespace isoscope::correlator
