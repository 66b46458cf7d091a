// The kernel's traceparent value parser (bpf/include/isoscope/traceparent.bpf.h), compiled as
// plain C++: the W3C Trace Context level 1 cases, byte for byte.
#include <array>
#include <cstdint>
#include <string>

#include <gtest/gtest.h>

#include "isoscope/traceparent.bpf.h"

namespace {

struct Result {
  bool ok = false;
  std::array<std::uint8_t, 16> trace_id{};
  std::array<std::uint8_t, 8> span_id{};
  std::uint8_t flags = 0;
};

Result Parse(const std::string& v) {
  // The parser reads exactly ISO_TP_VALUE_LEN bytes; the caller guarantees them.
  std::string buf = v;
  buf.resize(ISO_TP_VALUE_LEN, '\0');
  Result r;
  r.ok = iso_tp_parse(buf.data(), r.trace_id.data(), r.span_id.data(), &r.flags) == 1;
  return r;
}

const std::string kValid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(TraceparentParser, ValueIsFiftyFiveBytes) {
  EXPECT_EQ(kValid.size(), static_cast<std::size_t>(ISO_TP_VALUE_LEN));
}

TEST(TraceparentParser, DecodesTheW3cExample) {
  const Result r = Parse(kValid);
  ASSERT_TRUE(r.ok);
  const std::array<std::uint8_t, 16> trace{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                                           0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36};
  const std::array<std::uint8_t, 8> span{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7};
  EXPECT_EQ(r.trace_id, trace);
  EXPECT_EQ(r.span_id, span);
  EXPECT_EQ(r.flags, 0x01);
}

TEST(TraceparentParser, LooksAtFiftyFiveBytesOnly) {
  // A header line goes on with CR LF; a later version may append fields.
  EXPECT_TRUE(Parse(kValid + "\r\n").ok);
  EXPECT_TRUE(Parse("cc" + kValid.substr(2) + "-extra").ok);
}

TEST(TraceparentParser, RejectsVersionFf) {
  EXPECT_FALSE(Parse("ff" + kValid.substr(2)).ok);
  EXPECT_TRUE(Parse("fe" + kValid.substr(2)).ok);
}

TEST(TraceparentParser, RejectsAllZeroIds) {
  EXPECT_FALSE(Parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").ok);
  EXPECT_FALSE(Parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01").ok);
  EXPECT_TRUE(Parse("00-00000000000000000000000000000001-0000000000000001-00").ok);
}

TEST(TraceparentParser, RejectsUpperCaseAndNonHex) {
  EXPECT_FALSE(Parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").ok);
  EXPECT_FALSE(Parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067aa0ba902b7-01").ok);
  EXPECT_FALSE(Parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0G").ok);
  EXPECT_FALSE(Parse("0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").ok);
  // Every position of a valid value, one byte at a time, replaced by a non-hex byte.
  for (std::size_t i = 0; i < kValid.size(); ++i) {
    if (kValid[i] == '-') continue;
    for (char bad : {'g', 'A', ' ', '\0', '\xff', '/', ':', '`'}) {
      std::string v = kValid;
      v[i] = bad;
      EXPECT_FALSE(Parse(v).ok) << "position " << i << " byte " << int(static_cast<unsigned char>(bad));
    }
  }
}

TEST(TraceparentParser, RejectsMisplacedDashes) {
  for (std::size_t at : {2u, 35u, 52u}) {
    std::string v = kValid;
    v[at] = '_';
    EXPECT_FALSE(Parse(v).ok) << at;
  }
  EXPECT_FALSE(Parse("00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01").ok);
}

TEST(TraceparentParser, DecodesEveryHexDigit) {
  const std::string v = "00-0123456789abcdeffedcba9876543210-0123456789abcdef-ff";
  const Result r = Parse(v);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.trace_id[0], 0x01);
  EXPECT_EQ(r.trace_id[7], 0xef);
  EXPECT_EQ(r.trace_id[8], 0xfe);
  EXPECT_EQ(r.trace_id[15], 0x10);
  EXPECT_EQ(r.span_id[7], 0xef);
  EXPECT_EQ(r.flags, 0xff);
}

}  // namespace
