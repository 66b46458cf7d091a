// collectors/network (flows, slices, evidence, /proc sockets, trace summary) and
// exporters/prometheus/network_metrics.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "collectors/network/flow.hpp"
#include "collectors/network/net_evidence.hpp"
#include "collectors/network/net_summary.hpp"
#include "collectors/network/slices.hpp"
#include "collectors/network/socket_table.hpp"
#include "exporters/prometheus/network_metrics.hpp"
#include "isoscope/abi.hpp"
#include "testing/event_builder.hpp"
#include "testing/metrics_checks.hpp"

namespace isoscope::network {
namespace {

using testing::NetBuilder;

constexpr std::uint64_t kMs = 1000000;
constexpr std::uint64_t kSec = 1000 * kMs;
constexpr std::uint32_t kPodIp = 0x0a000001;   // 10.0.0.1
constexpr std::uint32_t kPeerIp = 0x0a000002;  // 10.0.0.2

NetBuilder Qdisc(std::uint64_t start, std::uint64_t end) {
  return NetBuilder(ISO_NET_EV_QDISC, ISO_NET_QUEUE, start, end);
}
NetBuilder Rcvq(std::uint64_t start, std::uint64_t end) {
  return NetBuilder(ISO_NET_EV_RCVQ, ISO_NET_QUEUE, start, end);
}
NetBuilder Retrans(std::uint64_t start, std::uint64_t end) {
  return NetBuilder(ISO_NET_EV_RETRANS, ISO_NET_PROTOCOL, start, end)
      .Reason(ISO_NET_RETRANS_TIMEOUT);
}
NetBuilder DropAt(std::uint64_t ts) {
  return NetBuilder(ISO_NET_EV_DROP, ISO_NET_PROTOCOL, ts, ts);
}

FlowKey PodFlow() { return FlowFromIpv4(kPodIp, 80, kPeerIp, 5555); }

// ---------------------------------------------------------------------------------------------
// Flows

TEST(Flow, NormalizedInBothDirections) {
  const iso_rec_net out = Qdisc(0, 1).Flow(kPodIp, 80, kPeerIp, 5555).Rec();
  const iso_rec_net in = Qdisc(0, 1).Flow(kPeerIp, 5555, kPodIp, 80).Rec();
  EXPECT_EQ(FlowFromNet(out), FlowFromNet(in));
  EXPECT_EQ(std::hash<FlowKey>()(FlowFromNet(out)), std::hash<FlowKey>()(FlowFromNet(in)));
  EXPECT_EQ(ToString(FlowFromNet(in)), "10.0.0.1:80<->10.0.0.2:5555");
  // Lower endpoint by address first, then port: the same address orders by port.
  EXPECT_EQ(ToString(FlowFromIpv4(kPodIp, 9000, kPodIp, 80)), "10.0.0.1:80<->10.0.0.1:9000");
  // Wire order: 10.0.0.1 is stored as bytes 10,0,0,1.
  const FlowKey key = FlowFromNet(out);
  EXPECT_EQ(key.family, kAfInet);
  EXPECT_EQ(key.lo.addr[0], 10);
  EXPECT_EQ(key.lo.addr[3], 1);
  EXPECT_EQ(key.lo.port, 80);
  EXPECT_NE(FlowFromNet(out), FlowFromIpv4(kPodIp, 81, kPeerIp, 5555));
}

TEST(Flow, TraceparentSocketMatchesPackets) {
  iso_rec_traceparent tp{};
  tp.family = 2;
  const std::uint8_t local[4] = {10, 0, 0, 2};
  const std::uint8_t peer[4] = {10, 0, 0, 1};
  std::memcpy(tp.saddr, local, 4);
  std::memcpy(tp.daddr, peer, 4);
  tp.sport = 5555;
  tp.dport = 80;
  EXPECT_EQ(FlowFromTraceparent(tp), PodFlow());
}

TEST(Flow, Ipv6AndV4Mapped) {
  std::uint8_t a[16] = {};
  std::uint8_t b[16] = {};
  a[0] = 0xfd;
  a[15] = 1;
  b[0] = 0xfd;
  b[15] = 2;
  const iso_rec_net one = Qdisc(0, 1).Flow6(b, 443, a, 40000).Rec();
  const iso_rec_net two = Qdisc(0, 1).Flow6(a, 40000, b, 443).Rec();
  EXPECT_EQ(FlowFromNet(one), FlowFromNet(two));
  EXPECT_EQ(FlowFromNet(one).family, kAfInet6);
  EXPECT_EQ(ToString(FlowFromNet(one)), "[fd00::1]:40000<->[fd00::2]:443");

  // A dual-stack socket talking IPv4 (::ffff:10.0.0.1) has the key of the IPv4 packets.
  std::uint8_t m1[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1};
  std::uint8_t m2[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2};
  EXPECT_EQ(FlowFromNet(Rcvq(0, 1).Flow6(m1, 80, m2, 5555).Rec()), PodFlow());

  // Not IP: no flow.
  EXPECT_FALSE(FlowFromNet(Qdisc(0, 1).Rec()).Valid());
  EXPECT_EQ(ToString(FlowKey{}), "-");
}

// ---------------------------------------------------------------------------------------------
// Slices

TEST(Slice, TableRows) {
  // veth: pod, either end (host side in the host netns, pod side in the pod's).
  EXPECT_EQ(SliceOf(Qdisc(0, 1).Device(5, "veth", "veth1a2b", true).Rec()), ISO_SLICE_POD);
  EXPECT_EQ(SliceOf(Qdisc(0, 1).Device(3, "veth", "eth0", false).Rec()), ISO_SLICE_POD);
  EXPECT_EQ(SliceOf(NetBuilder(ISO_NET_EV_BACKLOG, ISO_NET_SCHEDULING, 0, 1)
                        .Device(5, "veth", "veth1a2b", true)
                        .Rec()),
            ISO_SLICE_POD);
  // Other devices in the host netns: node (bridge, vxlan, the NIC's qdisc).
  EXPECT_EQ(SliceOf(Qdisc(0, 1).Device(2, "", "ens5", true).Rec()), ISO_SLICE_NODE);
  EXPECT_EQ(SliceOf(Qdisc(0, 1).Device(4, "bridge", "cni0", true).Rec()), ISO_SLICE_NODE);
  EXPECT_EQ(SliceOf(Qdisc(0, 1).Device(6, "vxlan", "flannel.1", true).Rec()), ISO_SLICE_NODE);
  // Sockets: by netns.
  EXPECT_EQ(SliceOf(Rcvq(0, 1).Socket(0x1000, 42, 42, false).Rec()), ISO_SLICE_POD);
  EXPECT_EQ(SliceOf(Rcvq(0, 1).Socket(0x1000, 42, 42, true).Rec()), ISO_SLICE_NODE);
  // Retransmissions alone: remote.
  EXPECT_EQ(SliceOf(Retrans(0, 1).Socket(0x1000, 42, 42, false).Rec()), ISO_SLICE_REMOTE);
  // Drops: like packets.
  EXPECT_EQ(SliceOf(DropAt(1).Device(5, "veth", "veth1a2b", true).Rec()), ISO_SLICE_POD);
  EXPECT_EQ(SliceOf(DropAt(1).Device(2, "", "ens5", true).Rec()), ISO_SLICE_NODE);
  iso_rec_net no_dev = DropAt(1).Rec();
  EXPECT_EQ(SliceOf(no_dev), ISO_SLICE_POD);
  no_dev.flags |= ISO_NET_F_HOST_NETNS;
  EXPECT_EQ(SliceOf(no_dev), ISO_SLICE_NODE);
  // A paravirtual NIC: its qdisc is the node's, its own ring (DEVQ) the virtio slice.
  EXPECT_EQ(SliceOf(Qdisc(0, 1).Device(2, "", "eth0", true).Rec()), ISO_SLICE_NODE);
  EXPECT_EQ(
      SliceOf(NetBuilder(ISO_NET_EV_DEVQ, ISO_NET_QUEUE, 0, 1).Device(2, "", "eth0", true).Rec()),
      ISO_SLICE_VIRTIO);
}

TEST(Slice, CausesAndNames) {
  const iso_rec_net q = Qdisc(0, 1).Device(5, "veth", "veth1a2b", true).Rec();
  EXPECT_EQ(abi::CauseName(CauseOf(q, SliceOf(q))), "network.pod.queue");
  const iso_rec_net b = NetBuilder(ISO_NET_EV_BACKLOG, ISO_NET_SCHEDULING, 0, 1)
                            .Device(2, "veth", "veth9", true)
                            .Rec();
  EXPECT_EQ(abi::CauseName(CauseOf(b, SliceOf(b))), "network.pod.scheduling");
  const iso_rec_net r = Retrans(0, 1).Rec();
  EXPECT_EQ(abi::CauseName(CauseOf(r, SliceOf(r))), "network.remote.protocol");
  EXPECT_EQ(abi::CauseName(CauseOf(q, ISO_SLICE_NODE)), "network.node.queue");
  // The event fixes the mechanism even when the record's own field says otherwise.
  const iso_rec_net d =
      NetBuilder(ISO_NET_EV_DEVQ, ISO_NET_PROTOCOL, 0, 1).Device(2, "", "eth0", true).Rec();
  EXPECT_EQ(abi::CauseName(CauseOf(d, SliceOf(d))), "network.virtio.queue");
  EXPECT_EQ(EventName(ISO_NET_EV_DEVQ), "devq");
  const iso_rec_net z =
      NetBuilder(ISO_NET_EV_ZWND, ISO_NET_QUEUE, 0, 1).Socket(0x1000, 0, 0, false).Rec();
  EXPECT_EQ(abi::CauseName(CauseOf(z, SliceOf(z))), "network.remote.protocol");
  EXPECT_EQ(EventName(ISO_NET_EV_ZWND), "zwnd");
  for (std::uint32_t s = 0; s < ISO_SLICE_MAX; ++s) {
    for (std::uint32_t m = 0; m < ISO_NET_MECHANISM_MAX; ++m) {
      const abi::Cause c = abi::NetworkCause(s, m);
      EXPECT_EQ(CauseSliceOf(c), s);
      EXPECT_EQ(CauseMechanismOf(c), m);
      EXPECT_EQ(abi::CauseName(c),
                "network." + std::string(SliceName(s)) + "." + std::string(MechanismName(m)));
    }
  }
  EXPECT_EQ(CauseSliceOf(ISO_CAUSE_CONTAINER_RUNQUEUE), static_cast<std::uint32_t>(ISO_SLICE_MAX));
  EXPECT_EQ(EventName(ISO_NET_EV_RCVQ), "rcvq");
  EXPECT_TRUE(EventName(99).empty());
}

TEST(Slice, RetransAfterDropTakesTheDropsSlice) {
  RetransAttributor attributor;
  // A drop on the pod's veth, then the retransmission of that flow (seen from the socket, in the
  // other direction) 200 ms later: pod.
  EXPECT_EQ(
      attributor.Attribute(
          DropAt(1 * kSec).Flow(kPodIp, 80, kPeerIp, 5555).Device(5, "veth", "v", true).Rec()),
      ISO_SLICE_POD);
  EXPECT_EQ(attributor.Attribute(
                Retrans(1 * kSec, 1 * kSec + 200 * kMs).Flow(kPeerIp, 5555, kPodIp, 80).Rec()),
            ISO_SLICE_POD);
  // A later drop on the NIC: the latest drop before the retransmission wins.
  attributor.OnDrop(PodFlow(), 2 * kSec, ISO_SLICE_NODE);
  EXPECT_EQ(attributor.SliceForRetrans(PodFlow(), 2 * kSec + 1), ISO_SLICE_NODE);
  // ... but not for a retransmission before it.
  EXPECT_EQ(attributor.SliceForRetrans(PodFlow(), 1 * kSec + 500 * kMs), ISO_SLICE_POD);
  // No drop on another flow: remote.
  EXPECT_EQ(attributor.Attribute(Retrans(0, 2 * kSec).Flow(kPodIp, 81, kPeerIp, 5555).Rec()),
            ISO_SLICE_REMOTE);
  // Past the window (3 s): remote.
  EXPECT_EQ(attributor.SliceForRetrans(PodFlow(), 5 * kSec + 1), ISO_SLICE_REMOTE);
}

TEST(Slice, RetransWithNoDropIsRemote) {
  RetransAttributor attributor;
  EXPECT_EQ(attributor.Attribute(Retrans(0, kSec).Flow(kPodIp, 80, kPeerIp, 5555).Rec()),
            ISO_SLICE_REMOTE);
  EXPECT_EQ(attributor.size(), 0u);
}

TEST(Slice, AttributorIsBounded) {
  RetransAttributor attributor(RetransAttributor::Limits{3 * kSec, 4});
  for (std::uint16_t port = 1; port <= 10; ++port) {
    attributor.OnDrop(FlowFromIpv4(kPodIp, port, kPeerIp, 80), kSec + port, ISO_SLICE_POD);
  }
  EXPECT_EQ(attributor.size(), 4u);
  EXPECT_EQ(attributor.Evicted(), 6u);
  EXPECT_EQ(attributor.SliceForRetrans(FlowFromIpv4(kPodIp, 1, kPeerIp, 80), 2 * kSec),
            ISO_SLICE_REMOTE);
  EXPECT_EQ(attributor.SliceForRetrans(FlowFromIpv4(kPodIp, 10, kPeerIp, 80), 2 * kSec),
            ISO_SLICE_POD);
  // Time moves on: old drops are forgotten without counting as evictions.
  attributor.OnDrop(PodFlow(), 10 * kSec, ISO_SLICE_NODE);
  EXPECT_EQ(attributor.size(), 1u);
  EXPECT_EQ(attributor.Evicted(), 6u);
}

// ---------------------------------------------------------------------------------------------
// Evidence

TEST(NetEvidence, IntervalsOverlapAndDrops) {
  NetEvidence store;
  store.Add(
      Qdisc(10 * kMs, 15 * kMs).Flow(kPodIp, 80, kPeerIp, 5555).Device(5, "veth", "v", true).Rec());
  store.Add(Rcvq(20 * kMs, 30 * kMs).Flow(kPeerIp, 5555, kPodIp, 80).Socket(1, 7, 7, false).Rec());
  store.Add(
      DropAt(25 * kMs).Flow(kPodIp, 80, kPeerIp, 5555).Device(2, "", "ens5", true).Reason(2).Rec());
  store.Add(
      Retrans(25 * kMs, 225 * kMs).Flow(kPodIp, 80, kPeerIp, 5555).Socket(1, 7, 7, false).Rec());
  store.Add(Qdisc(10 * kMs, 15 * kMs).Flow(kPodIp, 81, kPeerIp, 5555).Rec());  // another flow
  store.Add(Qdisc(10 * kMs, 15 * kMs).Rec());                                  // no flow

  auto all = store.Intervals(PodFlow(), 0, kSec);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(abi::CauseName(all[0].cause), "network.pod.queue");
  EXPECT_EQ(abi::CauseName(all[1].cause), "network.pod.queue");
  EXPECT_EQ(abi::CauseName(all[2].cause), "network.node.protocol");  // after the NIC's drop
  EXPECT_EQ(all[2].reason, ISO_NET_RETRANS_TIMEOUT);
  // Half-open overlap: [15, 20) touches neither end.
  EXPECT_TRUE(store.Intervals(PodFlow(), 15 * kMs, 20 * kMs).empty());
  EXPECT_EQ(store.Intervals(PodFlow(), 14 * kMs, 21 * kMs).size(), 2u);

  auto drops = store.Drops(PodFlow(), 0, kSec);
  ASSERT_EQ(drops.size(), 1u);
  EXPECT_EQ(drops[0].start_ns, drops[0].end_ns);
  EXPECT_EQ(drops[0].reason, 2);
  EXPECT_TRUE(store.Drops(PodFlow(), 26 * kMs, kSec).empty());

  const NetEvidenceStats stats = store.Stats();
  EXPECT_EQ(stats.added, 5u);
  EXPECT_EQ(stats.no_flow, 1u);
  EXPECT_EQ(stats.retrans_after_drop, 1u);
  EXPECT_EQ(stats.by_event[ISO_NET_EV_QDISC], 2u);
  EXPECT_EQ(stats.by_event[ISO_NET_EV_DROP], 1u);
  EXPECT_EQ(stats.by_event[ISO_NET_EV_RETRANS], 1u);
  EXPECT_EQ(stats.by_event[ISO_NET_EV_RCVQ], 1u);
}

TEST(NetEvidence, WindowExpiresOldEvidence) {
  NetEvidence::Limits limits;
  limits.window_ns = 10 * kSec;
  NetEvidence store(limits);
  for (std::uint64_t s = 1; s <= 20; ++s) {
    store.Add(Qdisc(s * kSec - kMs, s * kSec).Flow(kPodIp, 80, kPeerIp, 5555).Rec());
  }
  store.Add(DropAt(3 * kSec).Flow(kPodIp, 80, kPeerIp, 5555).Rec());  // late, old
  store.Expire(5 * kSec);  // before one window has passed: nothing
  EXPECT_EQ(store.size(), 21u);
  store.Expire(15 * kSec);  // forgets what ended before 5 s
  EXPECT_EQ(store.Stats().expired, 4u);
  EXPECT_EQ(store.Intervals(PodFlow(), 0, 100 * kSec).size(), 16u);
  store.Expire(100 * kSec);
  EXPECT_EQ(store.size(), 0u);
  EXPECT_EQ(store.Stats().expired, 21u);
  EXPECT_EQ(store.Stats().evicted, 0u);
  EXPECT_TRUE(store.Drops(PodFlow(), 0, 100 * kSec).empty());
}

TEST(NetEvidence, BoundedWithCountedEvictions) {
  NetEvidence::Limits limits;
  limits.max_intervals = 8;
  NetEvidence store(limits);
  for (std::uint16_t port = 1; port <= 20; ++port) {
    store.Add(Qdisc(port * kMs, port * kMs + kMs).Flow(kPodIp, port, kPeerIp, 80).Rec());
  }
  EXPECT_EQ(store.size(), 8u);
  const NetEvidenceStats stats = store.Stats();
  EXPECT_EQ(stats.added, 20u);
  EXPECT_EQ(stats.evicted, 12u);
  EXPECT_TRUE(store.Intervals(FlowFromIpv4(kPodIp, 12, kPeerIp, 80), 0, kSec).empty());
  EXPECT_EQ(store.Intervals(FlowFromIpv4(kPodIp, 13, kPeerIp, 80), 0, kSec).size(), 1u);
  EXPECT_EQ(store.Intervals(FlowFromIpv4(kPodIp, 20, kPeerIp, 80), 0, kSec).size(), 1u);
}

TEST(NetEvidence, SinkTakesNetRecordsAndCountsInvalidOnes) {
  NetEvidence store;
  NetEvidenceSink sink(store);
  const testing::Bytes bytes = Qdisc(kMs, 2 * kMs).Flow(kPodIp, 80, kPeerIp, 5555).Build();
  iso_rec_hdr hdr;
  std::memcpy(&hdr, bytes.data(), sizeof(hdr));
  sink.OnRecord(hdr, bytes);
  const testing::Bytes delay = testing::Delay(1, 1, ISO_CAUSE_CONTAINER_RUNQUEUE, 0, kMs);
  std::memcpy(&hdr, delay.data(), sizeof(hdr));
  sink.OnRecord(hdr, delay);                                             // not network: ignored
  store.Add(Qdisc(2 * kMs, kMs).Flow(kPodIp, 80, kPeerIp, 5555).Rec());  // ends before it starts
  EXPECT_EQ(store.size(), 1u);
  EXPECT_EQ(store.Stats().invalid, 1u);
}

// ---------------------------------------------------------------------------------------------
// /proc sockets. Lines captured from this machine's /proc/net/tcp{,6}: a listener on
// 127.0.0.1:34847, a connection to it from port 59772, an IPv6 connection on ::1, and a
// dual-stack listener's IPv4 connection (::ffff:127.0.0.1).

constexpr char kProcNetTcp[] =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout "
    "inode                                                     \n"
    "   0: 0100007F:881F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 "
    "1245745 1 00000000b237cf6f 100 0 0 10 0                   \n"
    "   1: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 "
    "1062 1 0000000043a7af8e 100 0 0 10 0                      \n"
    "   3: 0100007F:E97C 0100007F:881F 01 00000000:00000000 00:00000000 00000000     0        0 "
    "1245746 2 0000000001ff10e8 20 0 0 10 -1                   \n"
    "   4: 0100007F:881F 0100007F:E97C 01 00000000:00000000 00:00000000 00000000     0        0 "
    "1245747 1 00000000f465efb8 20 0 0 10 -1                   \n";

constexpr char kProcNetTcp6[] =
    "  sl  local_address                         remote_address                        st "
    "tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   1: 00000000000000000000000001000000:8A19 00000000000000000000000000000000:0000 0A "
    "00000000:00000000 00:00000000 00000000     0        0 1245748 1 00000000a8c6bfa9 100 0 0 10 "
    "0\n"
    "   2: 00000000000000000000000001000000:9FD8 00000000000000000000000001000000:8A19 01 "
    "00000000:00000000 00:00000000 00000000     0        0 1245749 2 000000001a7fb704 20 0 0 10 "
    "-1\n"
    "   4: 0000000000000000FFFF00000100007F:B123 0000000000000000FFFF00000100007F:9FC6 01 "
    "00000000:00000000 00:00000000 00000000     0        0 1245753 1 000000006e4b5a01 20 0 0 10 "
    "-1\n";

TEST(Socket, ParsesProcNetTcp) {
  auto sockets = ParseProcNetTcp(kProcNetTcp, kAfInet);
  ASSERT_TRUE(sockets.ok()) << sockets.error().message;
  ASSERT_EQ(sockets->size(), 4u);
  EXPECT_EQ((*sockets)[0].state, kTcpListen);
  EXPECT_EQ((*sockets)[0].inode, 1245745u);
  EXPECT_EQ(ToString((*sockets)[1].flow), "0.0.0.0:0<->0.0.0.0:2024");
  // Both ends of the loopback connection: one flow.
  EXPECT_EQ((*sockets)[2].state, 1);
  EXPECT_EQ((*sockets)[2].inode, 1245746u);
  EXPECT_EQ(ToString((*sockets)[2].flow), "127.0.0.1:34847<->127.0.0.1:59772");
  EXPECT_EQ((*sockets)[2].flow, (*sockets)[3].flow);
}

TEST(Socket, ParsesProcNetTcp6) {
  auto sockets = ParseProcNetTcp(kProcNetTcp6, kAfInet6);
  ASSERT_TRUE(sockets.ok()) << sockets.error().message;
  ASSERT_EQ(sockets->size(), 3u);
  EXPECT_EQ(ToString((*sockets)[1].flow), "[::1]:35353<->[::1]:40920");
  EXPECT_EQ((*sockets)[1].inode, 1245749u);
  // v4-mapped: the IPv4 key.
  EXPECT_EQ((*sockets)[2].flow.family, kAfInet);
  EXPECT_EQ(ToString((*sockets)[2].flow), "127.0.0.1:40902<->127.0.0.1:45347");
}

TEST(Socket, RejectsMalformedLinesAndLinks) {
  auto bad =
      ParseProcNetTcp("  sl  local_address rem_address   st\n   0: 0100007F:881F zz 0A\n", kAfInet);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("line 2"), std::string::npos) << bad.error().message;
  EXPECT_FALSE(ParseProcNetTcp(kProcNetTcp6, kAfInet).ok());  // IPv6 text as IPv4
  EXPECT_TRUE(ParseProcNetTcp("", kAfInet).ok());

  EXPECT_EQ(SocketInodeFromLink("socket:[1245745]"), 1245745u);
  EXPECT_FALSE(SocketInodeFromLink("pipe:[1244712]"));
  EXPECT_FALSE(SocketInodeFromLink("socket:[]"));
  EXPECT_FALSE(SocketInodeFromLink("socket:[12x]"));
  EXPECT_FALSE(SocketInodeFromLink("/dev/null"));
}

TEST(Socket, FindsOwnLoopbackConnection) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int client = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(client, 0);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  sockaddr_in local{};
  len = sizeof(local);
  ASSERT_EQ(getsockname(client, reinterpret_cast<sockaddr*>(&local), &len), 0);

  auto flows = TcpFlowsOfPids({static_cast<int>(getpid())});
  ASSERT_TRUE(flows.ok()) << flows.error().message;
  const FlowKey expected =
      FlowFromIpv4(INADDR_LOOPBACK, ntohs(local.sin_port), INADDR_LOOPBACK, ntohs(addr.sin_port));
  EXPECT_NE(std::find(flows->begin(), flows->end(), expected), flows->end()) << ToString(expected);
  for (const FlowKey& f : *flows) {  // the listener itself is not a flow
    EXPECT_FALSE(f.lo.port == 0 || f.hi.port == 0) << ToString(f);
  }
  close(client);
  close(listener);
}

TEST(Socket, MissingPidIsAnError) {
  auto flows = TcpFlowsOfPids({static_cast<int>(getpid()), 0x7ffffff0});
  ASSERT_FALSE(flows.ok());
  EXPECT_NE(flows.error().message.find("pid 2147483632"), std::string::npos)
      << flows.error().message;
  EXPECT_NE(flows.error().code, 0);
}

// ---------------------------------------------------------------------------------------------
// Trace summary

TEST(NetSummary, MergeIntervals) {
  EXPECT_TRUE(MergeIntervals({}).empty());
  const std::vector<Range> merged =
      MergeIntervals({{5, 8}, {1, 3}, {2, 4}, {4, 5}, {10, 10}, {12, 15}});
  EXPECT_EQ(merged, (std::vector<Range>{{1, 8}, {12, 15}}));
  EXPECT_EQ(UnionLength({{0, 10}, {2, 3}, {9, 12}}), 12u);
}

TEST(NetSummary, UnionsPerFlowAndCauseWithShares) {
  NetworkSummary summary;
  const FlowKey other = FlowFromIpv4(kPodIp, 81, kPeerIp, 5555);
  summary.SetFlows({PodFlow(), other});
  summary.Begin(1 * kSec, 2 * kSec);
  auto veth = [](std::uint64_t s, std::uint64_t e, std::uint16_t port) {
    return Qdisc(s, e).Flow(kPodIp, port, kPeerIp, 5555).Device(5, "veth", "v", true).Rec();
  };
  // Three parallel packets of one flow on the veth: [1.1, 1.3) ∪ [1.2, 1.4) ∪ [1.35, 1.5) = 0.4 s.
  summary.Add(veth(1100 * kMs, 1300 * kMs, 80));
  summary.Add(veth(1200 * kMs, 1400 * kMs, 80));
  summary.Add(veth(1350 * kMs, 1500 * kMs, 80));
  // The other flow adds its own 0.1 s in the same cause.
  summary.Add(veth(1100 * kMs, 1200 * kMs, 81));
  // Clipped to the interval: only [1.9, 2.0) counts.
  summary.Add(Qdisc(1900 * kMs, 2500 * kMs)
                  .Flow(kPodIp, 80, kPeerIp, 5555)
                  .Device(2, "", "ens5", true)
                  .Rec());
  // A drop on the NIC then a retransmission: node.protocol, 0.6 s.
  summary.Add(DropAt(1000 * kMs + 1)
                  .Flow(kPodIp, 80, kPeerIp, 5555)
                  .Device(2, "", "ens5", true)
                  .Reason(3)
                  .Rec());
  summary.Add(Retrans(1000 * kMs + 1, 1600 * kMs + 1)
                  .Flow(kPeerIp, 5555, kPodIp, 80)
                  .Socket(1, 7, 7, false)
                  .Rec());
  // Not a target flow: ignored.
  summary.Add(veth(1000 * kMs, 1900 * kMs, 9999));

  const NetSummaryResult r = summary.Summary();
  ASSERT_EQ(r.rows.size(), 3u);
  EXPECT_EQ(r.rows[0].name, "network.node.protocol");
  EXPECT_NEAR(r.rows[0].seconds, 0.6, 1e-9);
  EXPECT_EQ(r.rows[1].name, "network.pod.queue");
  EXPECT_NEAR(r.rows[1].seconds, 0.5, 1e-9);
  EXPECT_EQ(r.rows[2].name, "network.node.queue");
  EXPECT_NEAR(r.rows[2].seconds, 0.1, 1e-9);
  EXPECT_NEAR(r.total_seconds, 1.2, 1e-9);
  double shares = 0;
  for (const auto& row : r.rows) shares += row.share;
  EXPECT_NEAR(shares, 1.0, 1e-9);
  EXPECT_NEAR(r.rows[2].share, 0.1 / 1.2, 1e-9);
  EXPECT_EQ(r.retransmits, 1u);
  EXPECT_EQ(r.drops_by_reason, (std::map<std::uint16_t, std::uint64_t>{{3, 1}}));
  EXPECT_EQ(r.records, 8u);
  EXPECT_EQ(r.matched, 7u);

  // The next interval starts empty but keeps flows and remembered drops.
  summary.Begin(2 * kSec, 3 * kSec);
  EXPECT_TRUE(summary.Summary().rows.empty());
  summary.Add(
      DropAt(2900 * kMs).Flow(kPodIp, 80, kPeerIp, 5555).Device(5, "veth", "v", true).Rec());
  summary.Begin(3 * kSec, 4 * kSec);
  summary.Add(Retrans(2900 * kMs, 3100 * kMs).Flow(kPodIp, 80, kPeerIp, 5555).Rec());
  const NetSummaryResult next = summary.Summary();
  ASSERT_EQ(next.rows.size(), 1u);
  EXPECT_EQ(next.rows[0].name, "network.pod.protocol");
  EXPECT_NEAR(next.rows[0].seconds, 0.1, 1e-9);
  EXPECT_EQ(next.retransmits, 1u);
  EXPECT_TRUE(next.drops_by_reason.empty());
}

TEST(NetSummary, SpuriousRetransmissionsAreCountedNotBlamed) {
  constexpr std::uint16_t kOldData = 77;
  NetworkSummary summary;
  summary.SetOldDataReason(kOldData);
  summary.SetFlows({PodFlow()});
  summary.Begin(0, 2 * kSec);
  // The receiver's drop of a copy it already had, in the pod's netns.
  auto old_data = [](std::uint64_t at) {
    return DropAt(at)
        .Flow(kPeerIp, 5555, kPodIp, 80)
        .Device(5, "veth", "v", false)
        .Reason(kOldData)
        .Rec();
  };
  // A probe after 200 ms whose copy the receiver drops as old data 10 ms later: spurious.
  summary.Add(Retrans(100 * kMs, 300 * kMs).Flow(kPodIp, 80, kPeerIp, 5555).Rec());
  summary.Add(old_data(310 * kMs));
  // A real loss: dropped on the veth, retransmitted 300 ms later; the old-data drop 1.5 s after it
  // is out of the window and marks nothing.
  summary.Add(DropAt(400 * kMs)
                  .Flow(kPodIp, 80, kPeerIp, 5555)
                  .Device(5, "veth", "v", true)
                  .Reason(3)
                  .Rec());
  summary.Add(Retrans(400 * kMs, 700 * kMs).Flow(kPodIp, 80, kPeerIp, 5555).Rec());
  summary.Add(old_data(1900 * kMs));
  NetSummaryResult r = summary.Summary();
  EXPECT_EQ(r.retransmits, 2u);
  EXPECT_EQ(r.retransmits_spurious, 1u);
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].name, "network.pod.protocol");
  EXPECT_NEAR(r.rows[0].seconds, 0.3, 1e-9);  // only the real loss's wait

  // An interval the evidence store already marked spurious counts the same way.
  NetInterval marked = MakeInterval(
      Retrans(100 * kMs, 300 * kMs).Flow(kPodIp, 80, kPeerIp, 5555).Rec(), ISO_SLICE_REMOTE);
  marked.spurious = true;
  summary.Begin(0, 2 * kSec);
  summary.Add(PodFlow(), marked);
  r = summary.Summary();
  EXPECT_EQ(r.retransmits, 1u);
  EXPECT_EQ(r.retransmits_spurious, 1u);
  EXPECT_TRUE(r.rows.empty());
}

TEST(NetSummary, TakesIntervalsFromTheEvidenceStore) {
  NetEvidence store;
  store.Add(Rcvq(10 * kMs, 30 * kMs).Flow(kPodIp, 80, kPeerIp, 5555).Socket(1, 7, 7, false).Rec());
  store.Add(Rcvq(20 * kMs, 40 * kMs).Flow(kPodIp, 80, kPeerIp, 5555).Socket(1, 7, 7, false).Rec());
  NetworkSummary summary;
  summary.AddFlow(PodFlow());
  summary.Begin(0, kSec);
  for (const NetInterval& i : store.Intervals(PodFlow(), 0, kSec)) summary.Add(PodFlow(), i);
  const NetSummaryResult r = summary.Summary();
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].name, "network.pod.queue");
  EXPECT_NEAR(r.rows[0].seconds, 0.030, 1e-9);
  EXPECT_DOUBLE_EQ(r.rows[0].share, 1.0);
}

}  // namespace
}  // namespace isoscope::network

// ---------------------------------------------------------------------------------------------
// Prometheus

namespace isoscope::exporters {
namespace {

constexpr std::uint64_t kMs = 1000000;

correlator::TargetInfo Pod(const std::string& cgroup, const std::string& pod) {
  correlator::TargetInfo t;
  t.cgroup = cgroup;
  t.pod_uid = pod;
  t.container_id = "ctr-" + pod;
  return t;
}

double Sample(const std::string& scrape, const std::string& series) {
  std::istringstream in(scrape);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

std::string Scrape(const prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

network::NetInterval Interval(std::uint8_t event, abi::Cause cause, std::uint64_t ns) {
  network::NetInterval i;
  i.start_ns = 10 * kMs;
  i.end_ns = 10 * kMs + ns;
  i.cause = cause;
  i.event = event;
  return i;
}

TEST(NetMetrics, NamesLabelsAndBuckets) {
  auto registry = std::make_shared<prometheus::Registry>();
  NetworkMetrics metrics(registry);
  const auto w = Pod("/kubepods/pod-a", "a");
  metrics.OnInterval(
      Interval(ISO_NET_EV_QDISC, abi::NetworkCause(ISO_SLICE_POD, ISO_NET_QUEUE), 3 * kMs), w);
  metrics.OnInterval(Interval(ISO_NET_EV_RETRANS,
                              abi::NetworkCause(ISO_SLICE_REMOTE, ISO_NET_PROTOCOL), 200 * kMs),
                     w);
  metrics.OnInterval(
      Interval(ISO_NET_EV_DROP, abi::NetworkCause(ISO_SLICE_NODE, ISO_NET_PROTOCOL), 0), w);
  metrics.OnDelay(ISO_CAUSE_CONTAINER_RUNQUEUE, 0.1, w);  // not network: ignored
  const std::string s = Scrape(*registry);

  EXPECT_NE(s.find("# TYPE isoscope_net_delay_seconds histogram"), std::string::npos) << s;
  EXPECT_NE(s.find("# TYPE isoscope_net_retransmits_total counter"), std::string::npos);
  EXPECT_NE(s.find("# TYPE isoscope_net_workloads_overflow_total counter"), std::string::npos);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_net_workloads_overflow_total"), 0);
  const std::string pod_queue =
      "cause=\"network.pod.queue\",cgroup=\"/kubepods/"
      "pod-a\",container=\"\",container_id=\"ctr-a\","
      "mechanism=\"queue\",namespace=\"\",pod=\"\",pod_uid=\"a\",slice=\"pod\"";
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_net_delay_seconds_count{" + pod_queue + "}"), 1);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_net_delay_seconds_bucket{" + pod_queue + ",le=\"0.0025\"}"),
                   0);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_net_delay_seconds_bucket{" + pod_queue + ",le=\"0.005\"}"),
                   1);
  EXPECT_NE(s.find("le=\"0.0001\""), std::string::npos);
  EXPECT_NE(s.find("le=\"10\""), std::string::npos);
  EXPECT_DOUBLE_EQ(
      Sample(s,
             "isoscope_net_delay_seconds_sum{cause=\"network.remote.protocol\",cgroup="
             "\"/kubepods/pod-a\",container=\"\",container_id=\"ctr-a\",mechanism=\"protocol\","
             "namespace=\"\",pod=\"\",pod_uid=\"a\",slice=\"remote\"}"),
      0.2);
  EXPECT_DOUBLE_EQ(Sample(s,
                          "isoscope_net_retransmits_total{cgroup=\"/kubepods/pod-a\","
                          "container=\"\",container_id=\"ctr-a\",namespace=\"\",pod=\"\",pod_uid="
                          "\"a\",slice=\"remote\"}"),
                   1);
  EXPECT_EQ(s.find("network.node.protocol"), std::string::npos);  // the drop: not a delay
  EXPECT_EQ(s.find("container.runqueue"), std::string::npos);
}

TEST(NetMetrics, DropsAdvanceAndNeverDecrease) {
  auto registry = std::make_shared<prometheus::Registry>();
  NetworkMetrics metrics(registry);
  metrics.SetDrops({{"NO_SOCKET", 4}, {"QDISC_DROP", 0}});
  std::string s = Scrape(*registry);
  EXPECT_NE(s.find("# TYPE isoscope_net_drops_total counter"), std::string::npos) << s;
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_net_drops_total{reason=\"NO_SOCKET\"}"), 4);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_net_drops_total{reason=\"QDISC_DROP\"}"), 0);
  metrics.SetDrops({{"NO_SOCKET", 4}, {"QDISC_DROP", 7}});
  s = Scrape(*registry);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_net_drops_total{reason=\"NO_SOCKET\"}"), 4);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_net_drops_total{reason=\"QDISC_DROP\"}"), 7);
  metrics.SetDrops({{"NO_SOCKET", 2}});  // the source restarted
  EXPECT_DOUBLE_EQ(Sample(Scrape(*registry), "isoscope_net_drops_total{reason=\"NO_SOCKET\"}"), 6);
}

TEST(NetMetrics, FoldsWorkloadsBeyondTheLimit) {
  auto registry = std::make_shared<prometheus::Registry>();
  NetworkMetrics metrics(registry, 2);
  const abi::Cause cause = abi::NetworkCause(ISO_SLICE_NODE, ISO_NET_QUEUE);
  for (const char* pod : {"a", "b", "c", "d", "a"}) {
    metrics.OnDelay(cause, 0.01, Pod(std::string("/") + pod, pod));
  }
  metrics.OnRetransmit(ISO_SLICE_POD, Pod("/e", "e"));
  const std::string s = Scrape(*registry);
  const std::string labels =
      "cause=\"network.node.queue\",cgroup=\"{}\",container=\"\",container_id=\"{}\","
      "mechanism=\"queue\",namespace=\"\",pod=\"\",pod_uid=\"{}\",slice=\"node\"";
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_net_delay_seconds_count{" +
                                 fmt::format(fmt::runtime(labels), "/a", "ctr-a", "a") + "}"),
                   2);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_net_delay_seconds_count{" +
                                 fmt::format(fmt::runtime(labels), "other", "", "") + "}"),
                   2);
  EXPECT_DOUBLE_EQ(
      Sample(s,
             "isoscope_net_retransmits_total{cgroup=\"other\",container=\"\",container_id=\"\","
             "namespace=\"\",pod=\"\",pod_uid=\"\",slice=\"pod\"}"),
      1);
  EXPECT_DOUBLE_EQ(Sample(s, "isoscope_net_workloads_overflow_total"), 3);
  for (const char* folded : {"/c", "/d", "/e"}) {
    EXPECT_EQ(s.find(std::string("cgroup=\"") + folded + "\""), std::string::npos) << folded;
  }
}

TEST(NetMetrics, PromtoolAcceptsTheScrape) {
  if (!testing::HavePromtool()) GTEST_SKIP() << "no " << testing::kPromtool;
  auto registry = std::make_shared<prometheus::Registry>();
  NetworkMetrics metrics(registry, 1);
  metrics.OnInterval(
      Interval(ISO_NET_EV_RCVQ, abi::NetworkCause(ISO_SLICE_POD, ISO_NET_QUEUE), 2 * kMs),
      Pod("/a", "a"));
  metrics.OnInterval(
      Interval(ISO_NET_EV_RETRANS, abi::NetworkCause(ISO_SLICE_NODE, ISO_NET_PROTOCOL), 300 * kMs),
      Pod("/b", "b"));
  metrics.SetDrops({{"NO_SOCKET", 1}});
  testing::ExpectPromtoolAccepts(Scrape(*registry));
}

}  // namespace
}  // namespace isoscope::exporters
