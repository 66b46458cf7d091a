// Flows: the normalized 5-tuple of a TCP/UDP conversation (docs/network.md, "Joining a request").
//
// A FlowKey holds the family and two endpoints, lower endpoint first by (address bytes, port), so
// a packet seen in either direction and the sockets at both ends map to one key. Addresses are
// kept as on the wire (IPv4 in the first 4 bytes, the rest zero), ports in host order. An
// IPv4-mapped IPv6 address (::ffff:a.b.c.d, a dual-stack socket talking IPv4) is stored as IPv4,
// so such a socket and the IPv4 packets of its flow share a key.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "isoscope/abi.hpp"

namespace isoscope::network {

inline constexpr std::uint16_t kAfInet = 2;    // AF_INET
inline constexpr std::uint16_t kAfInet6 = 10;  // AF_INET6

struct Endpoint {
  std::array<std::uint8_t, 16> addr{};  // wire order; IPv4 in addr[0..3]
  std::uint16_t port = 0;               // host order
  // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy flags the defaulted comparison's own code
  auto operator<=>(const Endpoint&) const = default;
};

struct FlowKey {
  std::uint16_t family = 0;  // kAfInet, kAfInet6, or 0 when the record carried no IP flow
  Endpoint lo;               // the lower endpoint by (addr, port)
  Endpoint hi;
  // NOLINTNEXTLINE(modernize-use-nullptr): as above
  auto operator<=>(const FlowKey&) const = default;

  // True for an IPv4 or IPv6 flow.
  [[nodiscard]] bool Valid() const { return family == kAfInet || family == kAfInet6; }
};

struct FlowKeyHash {
  std::size_t operator()(const FlowKey& key) const noexcept;
};

// The key of the conversation between (saddr, sport) and (daddr, dport), in either order.
// Addresses are 16-byte buffers as in the ABI (IPv4 in the first 4 bytes).
FlowKey FlowFromTuple(std::uint16_t family, const std::uint8_t* saddr, std::uint16_t sport,
                      const std::uint8_t* daddr, std::uint16_t dport);
// Convenience for tests and /proc parsing: IPv4 given as host-order 0xaabbccdd for a.b.c.d.
FlowKey FlowFromIpv4(std::uint32_t saddr, std::uint16_t sport, std::uint32_t daddr,
                     std::uint16_t dport);
FlowKey FlowFromNet(const iso_rec_net& rec);
// saddr/sport are the local end, daddr/dport the peer.
FlowKey FlowFromTraceparent(const iso_rec_traceparent& rec);

// "10.0.0.1:80<->10.0.0.2:5555", "[::1]:80<->[::1]:5555"; "-" for a key without a flow.
std::string ToString(const FlowKey& key);
std::string ToString(std::uint16_t family, const Endpoint& endpoint);

}  // namespace isoscope::network

template <>
struct std::hash<isoscope::network::FlowKey> {
  std::size_t operator()(const isoscope::network::FlowKey& key) const noexcept {
    return isoscope::network::FlowKeyHash()(key);
  }
};
