// agent/net_join: the span join's view of the network evidence.
#include <gtest/gtest.h>

#include "agent/net_join.hpp"
#include "testing/event_builder.hpp"

namespace isoscope {
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
}  // namespace isoscope
