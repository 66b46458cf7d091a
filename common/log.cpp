#include "common/log.hpp"

#include <cstdarg>
#include <cstdio>
#include <string>

#include <bpf/libbpf.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace isoscope::log {

void Init(std::string_view level) {
  auto logger = spdlog::stderr_color_mt("isoscope");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(std::string(level)));
}

namespace {

int LibbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  // Verifier logs run to megabytes: size the message first, then format it
  // into a heap string (no large static or thread-local buffers: they are
  // paid for by every thread, including the metrics server's).
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  if (n <= 0) return n;
  std::string msg(static_cast<std::size_t>(n) + 1, '\0');
  std::vsnprintf(msg.data(), msg.size(), format, args);
  msg.resize(static_cast<std::size_t>(n));
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  // libbpf's warnings include whole verifier logs from load attempts the
  // loader expects to fail (optional programs); the loader reports their
  // outcome itself, so libbpf speaks at debug level only.
  (void)level;
  spdlog::debug("{}", msg);
  return n;
}

}  // namespace

void InstallLibbpfLogger() { libbpf_set_print(LibbpfPrint); }

}  // namespace isoscope::log
