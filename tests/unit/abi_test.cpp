#include <cstddef>

#include <gtest/gtest.h>

#include "isoscope/abi.hpp"
#include "testing/event_builder.hpp"

namespace isoscope::abi {
namespace {

TEST(AbiLayout, HeaderFieldsAtFixedOffsets) {
  EXPECT_EQ(offsetof(iso_rec_hdr, kind), 0u);
  EXPECT_EQ(offsetof(iso_rec_hdr, size), 2u);
  EXPECT_EQ(offsetof(iso_rec_hdr, abi_version), 4u);
  EXPECT_EQ(offsetof(iso_rec_hdr, tgid), 8u);
  EXPECT_EQ(offsetof(iso_rec_hdr, tid), 12u);
  EXPECT_EQ(offsetof(iso_rec_hdr, ts_ns), 16u);
  EXPECT_EQ(offsetof(iso_rec_hdr, cgroup_v2_id), 24u);
  EXPECT_EQ(offsetof(iso_rec_hdr, cgroup_v1_cpu_id), 32u);
  EXPECT_EQ(sizeof(iso_rec_hdr), 40u);
}

TEST(AbiLayout, PayloadsAreEightByteMultiplesWithoutImplicitPadding) {
  EXPECT_EQ(offsetof(iso_thread_totals, cause_ns), 0u);
  EXPECT_EQ(offsetof(iso_thread_totals, seg_start_ns), 8u * ISO_THREAD_CAUSES);
  EXPECT_EQ(offsetof(iso_thread_totals, comm) + 16, sizeof(iso_thread_totals));
  EXPECT_EQ(offsetof(iso_rec_delay, start_ns), sizeof(iso_rec_hdr));
  EXPECT_EQ(sizeof(iso_rec_delay) % 8, 0u);
  EXPECT_EQ(sizeof(iso_file_hdr), 128u);
  // Network records (ABI 3).
  EXPECT_EQ(offsetof(iso_rec_net, start_ns), 40u);
  EXPECT_EQ(offsetof(iso_rec_net, sock), 48u);
  EXPECT_EQ(offsetof(iso_rec_net, saddr), 56u);
  EXPECT_EQ(offsetof(iso_rec_net, sport), 88u);
  EXPECT_EQ(offsetof(iso_rec_net, event), 94u);
  EXPECT_EQ(offsetof(iso_rec_net, ifindex), 96u);
  EXPECT_EQ(offsetof(iso_rec_net, reason), 108u);
  EXPECT_EQ(offsetof(iso_rec_net, dev_kind), 112u);
  EXPECT_EQ(offsetof(iso_rec_net, dev_name), 120u);
  EXPECT_EQ(sizeof(iso_rec_net), 136u);
}

TEST(Taxonomy, EveryCauseHasAUniqueNameThatRoundTrips) {
  for (Cause c = 0; c < ISO_CAUSE_MAX; ++c) {
    const auto name = CauseName(c);
    ASSERT_FALSE(name.empty()) << c;
    EXPECT_EQ(CauseFromName(name), c) << name;
  }
  EXPECT_TRUE(CauseName(ISO_CAUSE_MAX).empty());
  EXPECT_FALSE(CauseFromName("container.nope").has_value());
}

TEST(Taxonomy, NamesMatchTheSharedTable) {
  EXPECT_EQ(CauseName(ISO_CAUSE_CONTAINER_CPU_THROTTLE), "container.cpu_throttle");
  EXPECT_EQ(CauseName(ISO_CAUSE_APP_BLOCKED_IO), "app.blocked_io");
  EXPECT_EQ(CauseName(ISO_CAUSE_HYPERVISOR_STEAL), "hypervisor.steal");
  EXPECT_EQ(CauseName(NetworkCause(ISO_SLICE_POD, ISO_NET_QUEUE)), "network.pod.queue");
  EXPECT_EQ(CauseName(NetworkCause(ISO_SLICE_REMOTE, ISO_NET_PROTOCOL)), "network.remote.protocol");
  EXPECT_EQ(CauseSlice(NetworkCause(ISO_SLICE_NODE, ISO_NET_SCHEDULING)), "node");
  EXPECT_EQ(CauseLayer(ISO_CAUSE_PARAVIRT_VMM_EXIT), Layer::kParavirt);
  EXPECT_EQ(CauseLayer(ISO_CAUSE_SANDBOX_WASM_HOSTCALL), Layer::kSandbox);
  EXPECT_EQ(CauseLayer(NetworkCause(ISO_SLICE_VIRTIO, ISO_NET_QUEUE)), Layer::kNetwork);
}

TEST(Taxonomy, OnlyAppCausesAreNotBlamable) {
  for (Cause c = 0; c < ISO_CAUSE_MAX; ++c) {
    EXPECT_EQ(Blamable(c), CauseName(c).substr(0, 4) != "app.") << CauseName(c);
  }
}

TEST(Validate, AcceptsWellFormedRecords) {
  testing::ThreadBuilder t(10, 11);
  auto rec = t.Totals(5);
  EXPECT_EQ(ValidateRecord(rec.data(), rec.size()), "");
  auto snap = testing::Snapshot(6);
  EXPECT_EQ(ValidateRecord(snap.data(), snap.size()), "");
}

TEST(Validate, RejectsTruncatedWrongVersionUnknownKindAndBadCause) {
  testing::ThreadBuilder t(10, 11);
  auto rec = t.Totals(5);
  EXPECT_NE(ValidateRecord(rec.data(), 10), "");
  EXPECT_NE(ValidateRecord(rec.data(), rec.size() - 8), "");

  iso_rec_hdr h = testing::Header(ISO_REC_DELAY, sizeof(iso_rec_delay), 1);
  h.abi_version = ISO_ABI_VERSION + 1;
  auto wrong_version = testing::ToBytes(h);
  wrong_version.resize(sizeof(iso_rec_delay));
  EXPECT_NE(ValidateRecord(wrong_version.data(), wrong_version.size()).find("ABI version"),
            std::string::npos);

  auto unknown = testing::ToBytes(testing::Header(ISO_REC_SANDBOX, 48, 1));
  unknown.resize(48);
  EXPECT_NE(ValidateRecord(unknown.data(), unknown.size()).find("unknown record kind"),
            std::string::npos);

  auto bad_cause = testing::Delay(1, 1, ISO_CAUSE_MAX + 3, 0, 10);
  EXPECT_NE(ValidateRecord(bad_cause.data(), bad_cause.size()), "");
}

}  // namespace
}  // namespace isoscope::abi
