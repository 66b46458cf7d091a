// The OTLP peer -> process lookup, on real loopback sockets of this test process (a child holds
// the client end, so the lookup must find the child, never the test itself).
#include "correlator/peer_resolver.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace isoscope::correlator {
namespace {

TEST(PeerResolver, ParsesGrpcPeerUris) {
  auto v4 = ParsePeerUri("ipv4:127.0.0.1:45678");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->first, network::kAfInet);
  EXPECT_EQ(v4->second.port, 45678);
  EXPECT_EQ(v4->second.addr[0], 127);
  EXPECT_EQ(v4->second.addr[3], 1);
  auto v6 = ParsePeerUri("ipv6:[::1]:80");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->first, network::kAfInet6);
  EXPECT_EQ(v6->second.addr[15], 1);
  auto mapped = ParsePeerUri("ipv6:[::ffff:10.1.2.3]:9");
  ASSERT_TRUE(mapped);
  EXPECT_EQ(mapped->first, network::kAfInet);
  EXPECT_EQ(mapped->second.addr[0], 10);
  EXPECT_EQ(mapped->second.addr[3], 3);
  for (const char* bad : {"unix:/tmp/x", "ipv4:127.0.0.1", "ipv4:127.0.0.1:0", "ipv4:1.2.3:80",
                          "ipv6:::1:80", "ipv4:127.0.0.1:99999", ""}) {
    EXPECT_FALSE(ParsePeerUri(bad)) << bad;
  }
}

TEST(PeerResolver, FindsTheProcessHoldingTheClientSocket) {
  const int server = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(server, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(server, 1), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(server, reinterpret_cast<sockaddr*>(&addr), &len), 0);

  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) _exit(1);
    char b = 1;
    if (write(ready[1], &b, 1) != 1) _exit(1);
    pause();  // hold the socket until killed
    _exit(0);
  }
  char b = 0;
  ASSERT_EQ(read(ready[0], &b, 1), 1);
  sockaddr_in peer{};
  socklen_t peer_len = sizeof(peer);
  const int conn = accept(server, reinterpret_cast<sockaddr*>(&peer), &peer_len);
  ASSERT_GE(conn, 0);

  PeerResolver resolver;
  const std::string uri = fmt::format("ipv4:127.0.0.1:{}", ntohs(peer.sin_port));
  auto pid = resolver.Resolve(uri);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  ASSERT_TRUE(pid) << uri;
  EXPECT_EQ(*pid, static_cast<std::uint32_t>(child));
  EXPECT_EQ(resolver.Resolve(uri), pid);  // cached
  EXPECT_FALSE(PeerResolver().Resolve("ipv4:127.0.0.1:1"));  // nobody there
  EXPECT_FALSE(resolver.Resolve("unix:/run/x.sock"));
  close(conn);
  close(server);
  close(ready[0]);
  close(ready[1]);
}

}  // namespace
}  // namespace isoscope::correlator
