// The OTLP/HTTP receiver over real loopback HTTP/1.1 (a plain-socket client below): valid
// requests reach the sink with the peer's address in gRPC's form; invalid span ids come back as
// partial success; malformed bodies get 400 with a google.rpc.Status and the server keeps
// serving; JSON gets 415, oversized bodies 413, gzip bodies are inflated; every refusal is
// counted. Also: both receivers feeding one pipeline.
#include "collectors/otlp/otlp_http_receiver.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>
#include <atomic>
#include <cctype>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "exporters/otlp/otlp_pipeline.hpp"
#include "otlp/test_collector.hpp"

namespace isoscope::otlp {
namespace {

using testing::MakePoints;
using testing::MakeSpans;
using testing::RecordingSink;
using testing::SpanNames;

struct HttpResponse {
  int status = 0;                              // 0: no answer
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;
  int local_port = 0;  // the client's side of the connection
};

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// One request on a fresh connection ("Connection: close"), read to EOF.
HttpResponse Request(int port, const std::string& method, const std::string& path,
                     const std::map<std::string, std::string>& headers, const std::string& body,
                     bool send_body = true) {
  HttpResponse r;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    if (fd >= 0) ::close(fd);
    return r;
  }
  sockaddr_in local{};
  socklen_t len = sizeof(local);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
    r.local_port = ntohs(local.sin_port);
  }
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  bool has_length = false;
  for (const auto& [k, v] : headers) {
    req += k + ": " + v + "\r\n";
    has_length = has_length || Lower(k) == "content-length";
  }
  if (!has_length) req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n";
  if (send_body) req += body;
  for (std::size_t off = 0; off < req.size();) {
    const ssize_t n = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<std::size_t>(n);
  }
  std::string raw;
  char buf[16384];
  while (true) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const auto head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos || raw.compare(0, 9, "HTTP/1.1 ") != 0) return r;
  r.status = std::stoi(raw.substr(9, 3));
  std::size_t line = raw.find("\r\n") + 2;
  while (line < head_end) {
    const auto eol = raw.find("\r\n", line);
    const auto colon = raw.find(':', line);
    if (colon != std::string::npos && colon < eol) {
      std::string value = raw.substr(colon + 1, eol - colon - 1);
      value.erase(0, value.find_first_not_of(' '));
      r.headers[Lower(raw.substr(line, colon - line))] = value;
    }
    line = eol + 2;
  }
  r.body = raw.substr(head_end + 4);
  return r;
}

const std::map<std::string, std::string> kProtobufHeaders = {
    {"Content-Type", "application/x-protobuf"}, {"User-Agent", "otlp-http-test/1"}};

HttpResponse PostTraces(int port, const std::string& body,
                        const std::map<std::string, std::string>& headers = kProtobufHeaders) {
  return Request(port, "POST", "/v1/traces", headers, body);
}

std::string Gzip(const std::string& in) {
  z_stream zs{};
  EXPECT_EQ(
      deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
      Z_OK);
  std::string out(deflateBound(&zs, in.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// google.rpc.Status {code = 1, message = 2} as far as this test needs it.
struct RpcStatus {
  int code = -1;
  std::string message;
};
RpcStatus ParseRpcStatus(const std::string& b) {
  RpcStatus s;
  std::size_t i = 0;
  auto varint = [&] {
    std::uint64_t v = 0;
    for (int shift = 0; i < b.size(); shift += 7) {
      const auto byte = static_cast<unsigned char>(b[i++]);
      v |= std::uint64_t{byte & 0x7fu} << shift;
      if ((byte & 0x80) == 0) break;
    }
    return v;
  };
  while (i < b.size()) {
    const auto tag = varint();
    if (tag == 0x08) {
      s.code = static_cast<int>(varint());
    } else if (tag == 0x12) {
      const auto n = varint();
      s.message = b.substr(i, n);
      i += n;
    } else {
      break;
    }
  }
  return s;
}

class OtlpHttpReceiverTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(ReceiverOptions{}); }
  void Start(ReceiverOptions o, bool metrics = true) {
    receiver_.reset();
    receiver_ = std::make_unique<OtlpHttpReceiver>(&sink_, metrics ? &sink_ : nullptr, o);
    auto st = receiver_->Start("127.0.0.1:0");
    ASSERT_TRUE(st.ok()) << st.error().message;
    ASSERT_GT(receiver_->Port(), 0);
    port_ = receiver_->Port();
  }
  RecordingSink sink_;
  std::unique_ptr<OtlpHttpReceiver> receiver_;
  int port_ = 0;
};

TEST_F(OtlpHttpReceiverTest, ValidRequestReachesSinkWithPeer) {
  const auto r = PostTraces(port_, MakeSpans(0, 3).SerializeAsString());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers.at("content-type"), "application/x-protobuf");
  TraceResponse resp;
  ASSERT_TRUE(resp.ParseFromString(r.body));
  EXPECT_FALSE(resp.has_partial_success());
  ASSERT_EQ(sink_.calls, 1);
  EXPECT_EQ(sink_.names, (std::vector<std::string>{"span-0", "span-1", "span-2"}));
  // The same form as the gRPC receiver's peer, with the client's real port (peer binding).
  EXPECT_EQ(sink_.peers[0].address, "ipv4:127.0.0.1:" + std::to_string(r.local_port));
  EXPECT_EQ(sink_.peers[0].user_agent, "otlp-http-test/1");
  EXPECT_EQ(receiver_->Address(), "127.0.0.1:" + std::to_string(port_));
  const auto s = receiver_->Stats();
  EXPECT_EQ(s.trace_requests, 1u);
  EXPECT_EQ(s.spans, 3u);
  EXPECT_EQ(s.invalid_requests, 0u);
}

TEST_F(OtlpHttpReceiverTest, MediaTypeParametersAndCaseAreAccepted) {
  const auto r = PostTraces(port_, MakeSpans(0, 1).SerializeAsString(),
                            {{"Content-Type", "Application/X-Protobuf; charset=binary"}});
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(sink_.calls, 1);
}

TEST_F(OtlpHttpReceiverTest, InvalidSpanIdsComeBackAsPartialSuccess) {
  TraceRequest req = MakeSpans(0, 4);
  req.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_spans(1)->set_span_id("");
  const auto r = PostTraces(port_, req.SerializeAsString());
  ASSERT_EQ(r.status, 200) << r.body;
  TraceResponse resp;
  ASSERT_TRUE(resp.ParseFromString(r.body));
  ASSERT_TRUE(resp.has_partial_success());
  EXPECT_EQ(resp.partial_success().rejected_spans(), 1);
  EXPECT_NE(resp.partial_success().error_message().find("span_id is not 8 bytes"),
            std::string::npos);
  EXPECT_EQ(sink_.names, (std::vector<std::string>{"span-0", "span-2", "span-3"}));
  const auto s = receiver_->Stats();
  EXPECT_EQ(s.spans, 4u);
  EXPECT_EQ(s.invalid_spans, 1u);
}

TEST_F(OtlpHttpReceiverTest, MalformedBodyGets400AndServerKeepsServing) {
  auto r = PostTraces(port_, "\xff\xff\xff\xff garbage");
  ASSERT_EQ(r.status, 400);
  EXPECT_EQ(r.headers.at("content-type"), "application/x-protobuf");
  const RpcStatus st = ParseRpcStatus(r.body);
  EXPECT_EQ(st.code, 3);  // INVALID_ARGUMENT
  EXPECT_NE(st.message.find("not a valid protobuf message"), std::string::npos) << st.message;

  const std::string full = MakeSpans(0, 4).SerializeAsString();
  EXPECT_EQ(PostTraces(port_, full.substr(0, full.size() / 2)).status, 400);  // truncated
  EXPECT_EQ(Request(port_, "POST", "/v1/metrics", kProtobufHeaders, "\x0a\x05\x01").status, 400);

  r = PostTraces(port_, MakeSpans(10, 2).SerializeAsString());
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(sink_.names, (std::vector<std::string>{"span-10", "span-11"}));
  const auto s = receiver_->Stats();
  EXPECT_EQ(s.invalid_requests, 3u);
  EXPECT_EQ(s.invalid_trace_requests, 2u);
  EXPECT_EQ(s.trace_requests, 1u);
}

TEST_F(OtlpHttpReceiverTest, JsonAndOtherMediaTypesGet415) {
  auto r = PostTraces(port_, R"({"resourceSpans":[]})", {{"Content-Type", "application/json"}});
  EXPECT_EQ(r.status, 415);
  EXPECT_NE(r.body.find("OTLP/JSON is not supported"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("application/x-protobuf"), std::string::npos) << r.body;
  r = PostTraces(port_, MakeSpans(0, 1).SerializeAsString(), {});  // no Content-Type
  EXPECT_EQ(r.status, 415);
  r = PostTraces(port_, MakeSpans(0, 1).SerializeAsString(),
                 {{"Content-Type", "application/x-protobuf"}, {"Content-Encoding", "br"}});
  EXPECT_EQ(r.status, 415);
  EXPECT_NE(r.body.find("Content-Encoding 'br'"), std::string::npos) << r.body;
  EXPECT_EQ(sink_.calls, 0);
  const auto s = receiver_->Stats();
  EXPECT_EQ(s.invalid_requests, 3u);
  EXPECT_EQ(s.invalid_trace_requests, 3u);
  EXPECT_EQ(PostTraces(port_, MakeSpans(0, 1).SerializeAsString()).status, 200);
}

TEST_F(OtlpHttpReceiverTest, OversizedBodyGets413AndServerKeepsServing) {
  ReceiverOptions o;
  o.max_receive_message_bytes = 64 * 1024;
  Start(o);
  // Refused on its Content-Length, before the body is read (the client does not send it).
  auto r = Request(port_, "POST", "/v1/traces",
                   {{"Content-Type", "application/x-protobuf"}, {"Content-Length", "100000"}}, "",
                   false);
  EXPECT_EQ(r.status, 413) << r.body;
  // A gzip body that inflates beyond the limit.
  TraceRequest big = MakeSpans(0, 1);
  auto* attr =
      big.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_spans(0)->add_attributes();
  attr->set_key("blob");
  attr->mutable_value()->set_string_value(std::string(100 * 1024, 'x'));
  const std::string packed = Gzip(big.SerializeAsString());
  ASSERT_LT(packed.size(), o.max_receive_message_bytes);
  r = PostTraces(port_, packed,
                 {{"Content-Type", "application/x-protobuf"}, {"Content-Encoding", "gzip"}});
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_EQ(sink_.calls, 0);
  EXPECT_EQ(receiver_->Stats().invalid_trace_requests, 2u);

  EXPECT_EQ(PostTraces(port_, MakeSpans(0, 1).SerializeAsString()).status, 200);
  EXPECT_EQ(sink_.calls, 1);
}

TEST_F(OtlpHttpReceiverTest, GzipBodiesAreInflated) {
  auto r = PostTraces(port_, Gzip(MakeSpans(0, 5).SerializeAsString()),
                      {{"Content-Type", "application/x-protobuf"}, {"Content-Encoding", "gzip"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(sink_.names.size(), 5u);
  // A corrupt gzip stream is a bad request, counted.
  std::string broken = Gzip(MakeSpans(0, 5).SerializeAsString());
  broken.resize(broken.size() / 2);
  r = PostTraces(port_, broken,
                 {{"Content-Type", "application/x-protobuf"}, {"Content-Encoding", "gzip"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(ParseRpcStatus(r.body).message.find("gzip"), std::string::npos) << r.body;
  EXPECT_EQ(receiver_->Stats().invalid_trace_requests, 1u);
  EXPECT_EQ(sink_.names.size(), 5u);
}

TEST_F(OtlpHttpReceiverTest, MetricsAreAcceptedAndCounted) {
  const auto r =
      Request(port_, "POST", "/v1/metrics", kProtobufHeaders, MakePoints(0, 5).SerializeAsString());
  ASSERT_EQ(r.status, 200) << r.body;
  MetricsResponse resp;
  EXPECT_TRUE(resp.ParseFromString(r.body));
  EXPECT_EQ(sink_.points, 5u);
  EXPECT_EQ(receiver_->Stats().metric_points, 5u);
  EXPECT_EQ(receiver_->Stats().metric_requests, 1u);
}

TEST_F(OtlpHttpReceiverTest, WrongPathOrMethodAreRefusedAndCounted) {
  const std::string body = MakeSpans(0, 1).SerializeAsString();
  EXPECT_EQ(Request(port_, "POST", "/v1/logs", kProtobufHeaders, body).status, 404);
  EXPECT_EQ(Request(port_, "POST", "/v1/traces/x", kProtobufHeaders, body).status, 404);
  EXPECT_EQ(Request(port_, "GET", "/", {}, "").status, 404);
  const auto r = Request(port_, "GET", "/v1/traces", {}, "");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.headers.at("allow"), "POST");
  EXPECT_EQ(Request(port_, "PUT", "/v1/traces", kProtobufHeaders, body).status, 405);
  EXPECT_EQ(sink_.calls, 0);
  const auto s = receiver_->Stats();
  EXPECT_EQ(s.unrouted_requests, 5u);
  EXPECT_EQ(s.invalid_requests, 0u);

  Start(ReceiverOptions{}, /*metrics=*/false);  // no metric sink: /v1/metrics does not exist
  EXPECT_EQ(
      Request(port_, "POST", "/v1/metrics", kProtobufHeaders, MakePoints(0, 1).SerializeAsString())
          .status,
      404);
}

TEST(OtlpHttpReceiver, RefusesAPortInUseAndBadAddresses) {
  RecordingSink sink;
  OtlpHttpReceiver first(&sink);
  ASSERT_TRUE(first.Start("127.0.0.1:0").ok());
  OtlpHttpReceiver second(&sink);
  auto st = second.Start(first.Address());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find(first.Address()), std::string::npos) << st.error().message;
  // A port held by the gRPC receiver is refused too.
  OtlpReceiver grpc_receiver(&sink);
  ASSERT_TRUE(grpc_receiver.Start("127.0.0.1:0").ok());
  EXPECT_FALSE(second.Start(grpc_receiver.Address()).ok());
  EXPECT_FALSE(second.Start("no-port").ok());
  EXPECT_FALSE(second.Start("127.0.0.1:99999").ok());
  EXPECT_FALSE(second.Start("127.0.0.1:").ok());
  EXPECT_EQ(PostTraces(first.Port(), MakeSpans(0, 1).SerializeAsString()).status, 200);
  EXPECT_FALSE(first.Start("127.0.0.1:0").ok());  // already listening
  first.Stop();
  first.Stop();
  EXPECT_EQ(PostTraces(first.Port(), MakeSpans(0, 1).SerializeAsString()).status, 0);
}

// Both receivers feed one pipeline: the same counters, the same sink path (no endpoint here:
// every span is dropped as no_endpoint), and a busy optional HTTP address leaves gRPC running.
TEST(OtlpPipelineHttp, BothReceiversFeedOnePipeline) {
  PipelineOptions po;
  po.listen = "127.0.0.1:0";
  po.http_listen = "127.0.0.1:0";
  auto p = OtlpPipeline::Create(po);
  ASSERT_TRUE(p.ok()) << p.error().message;
  std::atomic<int> enriched{0};
  (*p)->SetEnricher([&](TraceRequest&, const PeerInfo& peer) {
    if (peer.address.rfind("ipv4:127.0.0.1:", 0) == 0) ++enriched;
  });
  ASSERT_TRUE((*p)->Start().ok());
  ASSERT_TRUE((*p)->Listening());
  ASSERT_NE((*p)->HttpReceiver(), nullptr);
  grpc::ByteBuffer unused;
  ASSERT_TRUE(testing::SendRaw((*p)->Receiver().Address(), kTraceExportMethod,
                               MakeSpans(0, 2).SerializeAsString(), &unused)
                  .ok());
  EXPECT_EQ(PostTraces((*p)->HttpReceiver()->Port(), MakeSpans(10, 3).SerializeAsString()).status,
            200);
  EXPECT_EQ(PostTraces((*p)->HttpReceiver()->Port(), "garbage!").status, 400);
  const PipelineStats s = (*p)->Stats();
  EXPECT_EQ(s.receiver.trace_requests, 2u);
  EXPECT_EQ(s.receiver.spans, 5u);
  EXPECT_EQ(s.receiver.invalid_trace_requests, 1u);
  EXPECT_EQ(s.spans.received, 5u);
  EXPECT_EQ(s.spans.dropped[static_cast<std::size_t>(DropReason::kNoEndpoint)], 5u);
  EXPECT_EQ(enriched.load(), 2);

  // A busy HTTP address: fatal when chosen, a warning (and gRPC alone) when optional.
  PipelineOptions busy = po;
  busy.http_listen = (*p)->HttpReceiver()->Address();
  auto q = OtlpPipeline::Create(busy);
  ASSERT_TRUE(q.ok());
  EXPECT_FALSE((*q)->Start().ok());
  EXPECT_FALSE((*q)->Listening());
  busy.http_listen_optional = true;
  auto q2 = OtlpPipeline::Create(busy);
  ASSERT_TRUE(q2.ok());
  ASSERT_TRUE((*q2)->Start().ok());
  EXPECT_TRUE((*q2)->Listening());
  EXPECT_GT((*q2)->Receiver().Port(), 0);
}

}  // namespace
}  // namespace isoscope::otlp
