// libFuzzer target over the traceparent value parser that runs in the kernel
// (bpf/include/isoscope/traceparent.bpf.h, compiled here as plain C++). Each input is checked
// against an independent, straightforward reference parser written from the W3C Trace Context
// level 1 text (https://www.w3.org/TR/trace-context/#traceparent-header-field-values):
//   version "-" trace-id "-" parent-id "-" trace-flags, exactly 55 characters looked at;
//   version 2 lower-case hex, not "ff"; trace-id 32 lower-case hex, not all zero;
//   parent-id 16 lower-case hex, not all zero; trace-flags 2 lower-case hex.
// Both must agree on validity, and on valid input on every decoded byte. Traps otherwise.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "bpf/include/isoscope/traceparent.bpf.h"

namespace {

struct Parsed {
  std::array<std::uint8_t, 16> trace_id{};
  std::array<std::uint8_t, 8> span_id{};
  std::uint8_t flags = 0;
};

std::optional<int> LowerHex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return std::nullopt;
}

// Decodes `out.size()` bytes from 2 * out.size() lower-case hex characters.
template <std::size_t N>
bool DecodeHex(std::string_view s, std::array<std::uint8_t, N>& out) {
  if (s.size() != 2 * N) return false;
  for (std::size_t i = 0; i < N; ++i) {
    auto hi = LowerHex(s[2 * i]);
    auto lo = LowerHex(s[2 * i + 1]);
    if (!hi || !lo) return false;
    out[i] = static_cast<std::uint8_t>(*hi * 16 + *lo);
  }
  return true;
}

template <std::size_t N>
bool AllZero(const std::array<std::uint8_t, N>& a) {
  for (auto b : a) {
    if (b) return false;
  }
  return true;
}

std::optional<Parsed> Reference(std::string_view v) {
  if (v.size() < 55) return std::nullopt;
  v = v.substr(0, 55);
  // Split on the three dashes at their fixed places.
  if (v[2] != '-' || v[35] != '-' || v[52] != '-') return std::nullopt;
  std::array<std::uint8_t, 1> version{};
  std::array<std::uint8_t, 1> flags{};
  Parsed p;
  if (!DecodeHex(v.substr(0, 2), version) || version[0] == 0xff) return std::nullopt;
  if (!DecodeHex(v.substr(3, 32), p.trace_id) || AllZero(p.trace_id)) return std::nullopt;
  if (!DecodeHex(v.substr(36, 16), p.span_id) || AllZero(p.span_id)) return std::nullopt;
  if (!DecodeHex(v.substr(53, 2), flags)) return std::nullopt;
  p.flags = flags[0];
  return p;
}

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto ref = Reference(in);
  if (size < ISO_TP_VALUE_LEN) {
    Check(!ref);
    return 0;
  }
  // The BPF parser reads exactly ISO_TP_VALUE_LEN bytes (its caller checks the length): hand it
  // a buffer of that size so ASan catches any read beyond.
  char value[ISO_TP_VALUE_LEN];
  std::memcpy(value, data, sizeof(value));
  Parsed got;
  const int ok = iso_tp_parse(value, got.trace_id.data(), got.span_id.data(), &got.flags);
  Check(ok == 0 || ok == 1);
  Check(static_cast<bool>(ok) == ref.has_value());
  if (ok) {
    Check(got.trace_id == ref->trace_id);
    Check(got.span_id == ref->span_id);
    Check(got.flags == ref->flags);
  }
  return 0;
}
