// correlator/net_join: the span join's view of the network evidence.
#include "correlator/net_join.hpp"

#include <gtest/gtest.h>

#include "testing/event_builder.hpp"

namespace isoscope::correlator {
namespace {

constexpr std::uint64_t kMs = 1000000;

TEST(NetJoin, ReceiveQueueWaitsCountOnlyForTheReadingSocket) {
  network::NetEvidence evidence;
  // Client 10.0.0.1:40000 -> server 10.0.0.2:80. A qdisc backlog of the flow
  // (a packet record, no socket) and the server socket's receive-queue wait.
  evidence.Add(testing::NetBuilder(ISO_NET_EV_QDISC, ISO_NET_QUEUE, 10 * kMs, 20 * kMs)
                   .Flow(0x0a000001, 40000, 0x0a000002, 80)
                   .Device(7, "veth", "vethsrv", true)
                   .rec);
  evidence.Add(testing::NetBuilder(ISO_NET_EV_RCVQ, ISO_NET_QUEUE, 20 * kMs, 60 * kMs)
                   .Flow(0x0a000002, 80, 0x0a000001, 40000)
                   .Socket(0xbeef, 500, 501, false)
                   .rec);
  const auto lookup = MakeNetLookup(evidence);
  auto tuple = [](std::uint64_t sock, std::uint32_t local, std::uint16_t lport,
                  std::uint32_t peer, std::uint16_t pport) {
    correlator::SocketTuple t;
    t.sock = sock;
    t.family = 2;
    for (int i = 0; i < 4; ++i) {
      t.local[i] = static_cast<std::uint8_t>(local >> (24 - 8 * i));
      t.peer[i] = static_cast<std::uint8_t>(peer >> (24 - 8 * i));
    }
    t.local_port = lport;
    t.peer_port = pport;
    return t;
  };
  // The server's span (its socket read late): both.
  auto server = lookup(tuple(0xbeef, 0x0a000002, 80, 0x0a000001, 40000), 0, 100 * kMs);
  ASSERT_EQ(server.size(), 2u);
  // The client's span: the flow's backlog, not the server's slowness to read.
  auto client = lookup(tuple(0xcafe, 0x0a000001, 40000, 0x0a000002, 80), 0, 100 * kMs);
  ASSERT_EQ(client.size(), 1u);
  EXPECT_EQ(client[0].cause, abi::NetworkCause(ISO_SLICE_POD, ISO_NET_QUEUE));
  EXPECT_EQ(client[0].start_ns, 10 * kMs);
  // Another flow: nothing.
  EXPECT_TRUE(lookup(tuple(0xbeef, 0x0a000002, 81, 0x0a000001, 40000), 0, 100 * kMs).empty());
}

TEST(NetJoin, HexIds) {
  const std::uint8_t id[4] = {0x00, 0x0f, 0xa0, 0xff};
  EXPECT_EQ(HexId(id), "000fa0ff");
}

}  // namespace
}  // namespace isoscope::correlator

namespace isoscope::correlator {
namespace {

TEST(NetJoin, RetransmissionsTheReceiverDroppedAsOldDataAreNotJoined) {
  network::NetEvidence evidence;
  constexpr std::uint16_t kOldData = 77;
  evidence.SetOldDataReason(kOldData);
  auto retrans = [](std::uint64_t start, std::uint64_t end) {
    return testing::NetBuilder(ISO_NET_EV_RETRANS, ISO_NET_PROTOCOL, start, end)
        .Flow(0x0a000001, 40000, 0x0a000002, 80)
        .Socket(0xcafe, 1, 1, false)
        .rec;
  };
  auto old_data = [](std::uint64_t at) {
    return testing::NetBuilder(ISO_NET_EV_DROP, ISO_NET_PROTOCOL, at, at)
        .Flow(0x0a000001, 40000, 0x0a000002, 80)
        .Reason(kOldData)
        .rec;
  };
  evidence.Add(retrans(0, 10 * kMs));
  evidence.Add(old_data(11 * kMs));  // the copy arrived twice: needless
  evidence.Add(retrans(20 * kMs, 220 * kMs));
  evidence.Add(old_data(2000 * kMs));  // too late to say anything about it
  const auto flow = network::FlowFromIpv4(0x0a000001, 40000, 0x0a000002, 80);
  auto joined = evidence.Intervals(flow, 0, 3000 * kMs);
  ASSERT_EQ(joined.size(), 1u);
  EXPECT_EQ(joined[0].start_ns, 20 * kMs);
  EXPECT_EQ(evidence.Stats().retrans_spurious, 1u);
  EXPECT_EQ(DropReasonValue({"", "not_specified", "tcp_old_data"}, "tcp_old_data"), 2);
  EXPECT_EQ(DropReasonValue({"", "not_specified"}, "tcp_old_data"), 0);
}

}  // namespace
}  // namespace isoscope::correlator
