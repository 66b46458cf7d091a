#include "collectors/otlp/otlp_http_receiver.hpp"

#include <civetweb.h>
#include <zlib.h>
#include <algorithm>
#include <array>
#include <cctype>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace isoscope::otlp {
namespace {

constexpr std::string_view kProtobuf = "application/x-protobuf";
constexpr std::string_view kText = "text/plain; charset=utf-8";
constexpr int kGrpcInvalidArgument = 3;                     // google.rpc.Code
constexpr std::size_t kChunkBytes = std::size_t{64} << 10;  // read and inflate buffers

// Lowercase media type of a Content-Type header, without parameters and blanks.
std::string MediaType(const char* header) {
  std::string_view v = header != nullptr ? header : "";
  v = v.substr(0, v.find(';'));
  std::string out;
  for (const char c : v) {
    if (c != ' ' && c != '\t') out.push_back(static_cast<char>(std::tolower(c)));
  }
  return out;
}

void AppendVarint(std::string* out, std::uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// google.rpc.Status {int32 code = 1; string message = 2;} in protobuf.
std::string RpcStatus(int code, std::string_view message) {
  std::string out;
  out.push_back('\x08');
  AppendVarint(&out, static_cast<std::uint64_t>(code));
  out.push_back('\x12');
  AppendVarint(&out, message.size());
  out.append(message);
  return out;
}

// gzip decompression of `in`, at most `limit` bytes of output. Fails on a corrupt or truncated
// stream; *too_large tells a body that inflates beyond the limit.
Result<std::string> Gunzip(std::string_view in, std::size_t limit, bool* too_large) {
  *too_large = false;
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) return MakeError("gzip: inflateInit2 failed");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  std::string out;
  std::vector<char> chunk(kChunkBytes);
  int rc = Z_OK;
  while (rc == Z_OK) {
    zs.next_out = reinterpret_cast<Bytef*>(chunk.data());
    zs.avail_out = static_cast<uInt>(chunk.size());
    rc = inflate(&zs, Z_NO_FLUSH);
    const std::size_t produced = chunk.size() - zs.avail_out;
    if (out.size() + produced > limit) {
      inflateEnd(&zs);
      *too_large = true;
      return MakeError("gzip body inflates to more than {} bytes", limit);
    }
    out.append(chunk.data(), produced);
    if (rc == Z_BUF_ERROR && zs.avail_in == 0) break;  // input ended before the stream did
  }
  const bool complete = rc == Z_STREAM_END && zs.avail_in == 0;
  inflateEnd(&zs);
  if (!complete) {
    return MakeError("gzip body does not inflate ({})",
                     rc == Z_STREAM_END ? "data after the end of the stream"
                                        : (zs.msg != nullptr ? zs.msg : "truncated"));
  }
  return out;
}

void Reply(mg_connection* conn, int status, std::string_view content_type, std::string_view body,
           bool close = false) {
  if (close) mg_disable_keep_alive(conn);
  mg_response_header_start(conn, status);
  mg_response_header_add(conn, "Content-Type", content_type.data(),
                         static_cast<int>(content_type.size()));
  const std::string length = std::to_string(body.size());
  mg_response_header_add(conn, "Content-Length", length.c_str(), -1);
  if (status == 405) mg_response_header_add(conn, "Allow", "POST", -1);
  mg_response_header_send(conn);
  if (!body.empty()) mg_write(conn, body.data(), body.size());
}

int ReplyText(mg_connection* conn, int status, const std::string& message, bool close = false) {
  Reply(conn, status, kText, message + "\n", close);
  return status;
}

// The peer in gRPC's URI form (PeerInfo::address): "ipv4:127.0.0.1:45678", "ipv6:[::1]:45678".
PeerInfo PeerOf(mg_connection* conn, const mg_request_info& ri) {
  PeerInfo peer;
  const std::string_view addr = ri.remote_addr;
  peer.address = addr.find(':') == std::string_view::npos
                     ? fmt::format("ipv4:{}:{}", addr, ri.remote_port)
                     : fmt::format("ipv6:[{}]:{}", addr, ri.remote_port);
  if (const char* ua = mg_get_header(conn, "User-Agent"); ua != nullptr) peer.user_agent = ua;
  return peer;
}

// civetweb's own messages (bind errors at start, connection errors) go through spdlog.
int LogMessage(const mg_connection* /*conn*/, const char* message) {
  spdlog::debug("OTLP/HTTP receiver (civetweb): {}", message);
  return 1;  // handled: civetweb writes nothing itself
}

}  // namespace

OtlpHttpReceiver::OtlpHttpReceiver(SpanSink* spans, MetricSink* metrics, ReceiverOptions options)
    : handler_(spans, metrics), options_(options) {}

OtlpHttpReceiver::~OtlpHttpReceiver() { Stop(); }

Status OtlpHttpReceiver::Start(const std::string& addr) {
  if (ctx_ != nullptr) return MakeError("OTLP/HTTP receiver already listening on {}", address_);
  if (!ValidListenAddress(addr)) {
    return MakeError("OTLP/HTTP listen address '{}' is not host:port", addr);
  }
  if (options_.max_receive_message_bytes == 0) {
    return MakeError("OTLP/HTTP receiver: max message size 0");
  }
  mg_init_library(0);
  const std::string threads = std::to_string(kThreads);
  const char* config[] = {
      "listening_ports", addr.c_str(),        "num_threads", threads.c_str(), "request_timeout_ms",
      "30000",           "enable_keep_alive", "yes",         nullptr};
  mg_callbacks callbacks{};
  callbacks.log_message = LogMessage;
  mg_init_data init{};
  init.callbacks = &callbacks;
  init.user_data = this;
  init.configuration_options = config;
  std::array<char, 256> error_text{};
  unsigned error_code = 0;
  mg_error_data error{};
  error.code = &error_code;
  error.text = error_text.data();
  error.text_buffer_size = error_text.size();
  ctx_ = mg_start2(&init, &error);
  if (ctx_ == nullptr) {
    mg_exit_library();
    return MakeError("OTLP/HTTP receiver cannot listen on {} (address in use or not local?): {}",
                     addr, error_text[0] != '\0' ? error_text.data() : "civetweb did not start");
  }
  mg_set_request_handler(ctx_, "/", &OtlpHttpReceiver::OnRequest, this);
  std::array<mg_server_port, 4> ports{};
  const int n = mg_get_server_ports(ctx_, static_cast<int>(ports.size()), ports.data());
  port_ = n > 0 ? ports[0].port : 0;
  address_ = addr.substr(0, addr.rfind(':')) + ":" + std::to_string(port_);
  spdlog::info("OTLP/HTTP receiver listening on {} (max message {} bytes, {} threads)", address_,
               options_.max_receive_message_bytes, kThreads);
  return {};
}

void OtlpHttpReceiver::Stop() {
  if (ctx_ == nullptr) return;
  mg_stop(ctx_);
  ctx_ = nullptr;
  mg_exit_library();
  spdlog::info("OTLP/HTTP receiver on {} stopped", address_);
}

ReceiverStats OtlpHttpReceiver::Stats() const {
  ReceiverStats s = handler_.Stats();
  s.unrouted_requests = unrouted_.load(std::memory_order_relaxed);
  return s;
}

int OtlpHttpReceiver::OnRequest(mg_connection* conn, void* self) {
  return static_cast<OtlpHttpReceiver*>(self)->Serve(conn);
}

int OtlpHttpReceiver::Serve(mg_connection* conn) {
  const mg_request_info& ri = *mg_get_request_info(conn);
  const std::string_view path = ri.local_uri != nullptr ? ri.local_uri : "";
  const bool traces = path == "/v1/traces";
  if (!traces && !(path == "/v1/metrics" && handler_.ServesMetrics())) {
    unrouted_.fetch_add(1, std::memory_order_relaxed);
    return ReplyText(conn, 404, fmt::format("no OTLP endpoint at {}", path));
  }
  if (std::string_view(ri.request_method) != "POST") {
    unrouted_.fetch_add(1, std::memory_order_relaxed);
    return ReplyText(conn, 405, fmt::format("{} takes POST only", path));
  }
  auto refuse = [&](int status, const std::string& message) {
    handler_.CountRefused(traces);
    // The body may be left unread: the connection cannot carry another request.
    return ReplyText(conn, status, message, /*close=*/true);
  };
  const std::string media = MediaType(mg_get_header(conn, "Content-Type"));
  if (media == "application/json") {
    return refuse(415,
                  "OTLP/JSON is not supported: send binary protobuf (Content-Type: "
                  "application/x-protobuf)");
  }
  if (media != kProtobuf) {
    return refuse(415, fmt::format("unsupported Content-Type '{}': only application/x-protobuf "
                                   "is accepted",
                                   media));
  }
  const std::string encoding = MediaType(mg_get_header(conn, "Content-Encoding"));
  const bool gzip = encoding == "gzip";
  if (!gzip && !encoding.empty() && encoding != "identity") {
    return refuse(
        415, fmt::format("unsupported Content-Encoding '{}': only gzip is accepted", encoding));
  }
  const std::size_t limit = options_.max_receive_message_bytes;
  if (ri.content_length > 0 && static_cast<std::uint64_t>(ri.content_length) > limit) {
    return refuse(413, fmt::format("body of {} bytes is larger than the limit of {} bytes",
                                   ri.content_length, limit));
  }
  std::string body;
  if (ri.content_length > 0) body.reserve(static_cast<std::size_t>(ri.content_length));
  std::vector<char> buf(kChunkBytes);
  while (true) {
    const int got = mg_read(conn, buf.data(), buf.size());
    if (got < 0) return refuse(400, "request body could not be read");
    if (got == 0) break;
    if (body.size() + static_cast<std::size_t>(got) > limit) {
      return refuse(413, fmt::format("body is larger than the limit of {} bytes", limit));
    }
    body.append(buf.data(), static_cast<std::size_t>(got));
  }
  if (gzip) {
    bool too_large = false;
    auto inflated = Gunzip(body, limit, &too_large);
    if (!inflated) {
      if (too_large) return refuse(413, inflated.error().message);
      handler_.CountRefused(traces);
      Reply(conn, 400, kProtobuf, RpcStatus(kGrpcInvalidArgument, inflated.error().message));
      return 400;
    }
    body = std::move(*inflated);
  }
  const PeerInfo peer = PeerOf(conn, ri);
  auto resp = traces ? handler_.HandleTraces(body, peer) : handler_.HandleMetrics(body, peer);
  if (!resp) {
    Reply(conn, 400, kProtobuf, RpcStatus(kGrpcInvalidArgument, resp.error().message));
    return 400;
  }
  Reply(conn, 200, kProtobuf, *resp);
  return 200;
}

}  // namespace isoscope::otlp
