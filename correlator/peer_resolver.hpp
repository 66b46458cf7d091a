// The process at the other end of an OTLP connection (docs/otlp-correlation.md, binding "peer"):
// the gRPC peer URI ("ipv4:127.0.0.1:45678", "ipv6:[::1]:45678") names a TCP endpoint; the
// sockets of that flow are found in the agent's netns TCP tables (/proc/net/tcp, tcp6), and the
// process holding one of them, other than the agent itself, is the peer. Only endpoints in the
// agent's network namespace resolve (loopback senders, host-network pods).
//
// Thread-safe. Results, found or not, are cached for `ttl` per URI (a gRPC client keeps its
// connection), at most kMaxEntries URIs.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "collectors/network/flow.hpp"

namespace isoscope::correlator {

// Parses a gRPC peer URI into (family, endpoint); nullopt for unix sockets and malformed text.
std::optional<std::pair<std::uint16_t, network::Endpoint>> ParsePeerUri(std::string_view uri);

class PeerResolver {
 public:
  explicit PeerResolver(std::string proc = "/proc",
                        std::chrono::seconds ttl = std::chrono::seconds(30))
      : proc_(std::move(proc)), ttl_(ttl) {}
  std::optional<std::uint32_t> Resolve(const std::string& uri);

 private:
  static constexpr std::size_t kMaxEntries = 1024;
  struct Entry {
    std::optional<std::uint32_t> pid;
    std::chrono::steady_clock::time_point at;
  };
  std::optional<std::uint32_t> Lookup(std::uint16_t family, const network::Endpoint& peer) const;

  const std::string proc_;
  const std::chrono::seconds ttl_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> cache_;  // guarded by mu_
};

}  // namespace isoscope::correlator
