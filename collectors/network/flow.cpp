#include "collectors/network/flow.hpp"

#include <arpa/inet.h>
#include <algorithm>
#include <cstring>
#include <utility>

#include <fmt/format.h>

namespace isoscope::network {
namespace {

constexpr std::uint8_t kV4MappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

// Copies one address into an endpoint for `family` (already reduced from v4-mapped).
Endpoint MakeEndpoint(std::uint16_t family, const std::uint8_t* addr, std::uint16_t port) {
  Endpoint e;
  e.port = port;
  if (family == kAfInet) {
    std::memcpy(e.addr.data(), addr, 4);
  } else if (family == kAfInet6) {
    std::memcpy(e.addr.data(), addr, 16);
  }
  return e;
}

bool IsV4Mapped(const std::uint8_t* addr) {
  return std::memcmp(addr, kV4MappedPrefix, sizeof(kV4MappedPrefix)) == 0;
}

std::size_t Mix(std::size_t h, std::uint64_t v) {
  // 64-bit mix (splitmix64 finalizer) folded into the running hash.
  v += 0x9e3779b97f4a7c15ull + h;
  v = (v ^ (v >> 30)) * 0xbf58476d1ce4e5b9ull;
  v = (v ^ (v >> 27)) * 0x94d049bb133111ebull;
  return static_cast<std::size_t>(v ^ (v >> 31));
}

std::size_t HashEndpoint(std::size_t h, const Endpoint& e) {
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  std::memcpy(&a, e.addr.data(), 8);
  std::memcpy(&b, e.addr.data() + 8, 8);
  return Mix(Mix(Mix(h, a), b), e.port);
}

}  // namespace

std::size_t FlowKeyHash::operator()(const FlowKey& key) const noexcept {
  return HashEndpoint(HashEndpoint(key.family, key.lo), key.hi);
}

FlowKey FlowFromTuple(std::uint16_t family, const std::uint8_t* saddr, std::uint16_t sport,
                      const std::uint8_t* daddr, std::uint16_t dport) {
  FlowKey key;
  if (family == kAfInet6 && IsV4Mapped(saddr) && IsV4Mapped(daddr)) {
    key.family = kAfInet;
    saddr += 12;
    daddr += 12;
  } else if (family == kAfInet || family == kAfInet6) {
    key.family = family;
  } else {
    return key;  // not IP: no flow
  }
  Endpoint a = MakeEndpoint(key.family, saddr, sport);
  Endpoint b = MakeEndpoint(key.family, daddr, dport);
  if (b < a) std::swap(a, b);
  key.lo = a;
  key.hi = b;
  return key;
}

FlowKey FlowFromIpv4(std::uint32_t saddr, std::uint16_t sport, std::uint32_t daddr,
                     std::uint16_t dport) {
  const std::uint8_t s[4] = {
      static_cast<std::uint8_t>(saddr >> 24), static_cast<std::uint8_t>(saddr >> 16),
      static_cast<std::uint8_t>(saddr >> 8), static_cast<std::uint8_t>(saddr)};
  const std::uint8_t d[4] = {
      static_cast<std::uint8_t>(daddr >> 24), static_cast<std::uint8_t>(daddr >> 16),
      static_cast<std::uint8_t>(daddr >> 8), static_cast<std::uint8_t>(daddr)};
  return FlowFromTuple(kAfInet, s, sport, d, dport);
}

FlowKey FlowFromNet(const iso_rec_net& rec) {
  return FlowFromTuple(rec.family, rec.saddr, rec.sport, rec.daddr, rec.dport);
}

FlowKey FlowFromTraceparent(const iso_rec_traceparent& rec) {
  return FlowFromTuple(rec.family, rec.saddr, rec.sport, rec.daddr, rec.dport);
}

std::string ToString(std::uint16_t family, const Endpoint& endpoint) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family == kAfInet) {
    if (inet_ntop(AF_INET, endpoint.addr.data(), buf, sizeof(buf)) == nullptr) return "?";
    return fmt::format("{}:{}", buf, endpoint.port);
  }
  if (family == kAfInet6) {
    if (inet_ntop(AF_INET6, endpoint.addr.data(), buf, sizeof(buf)) == nullptr) return "?";
    return fmt::format("[{}]:{}", buf, endpoint.port);
  }
  return "-";
}

std::string ToString(const FlowKey& key) {
  if (!key.Valid()) return "-";
  return ToString(key.family, key.lo) + "<->" + ToString(key.family, key.hi);
}

}  // namespace isoscope::network
