#include "util/log.hpp"

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
  static thread_local char buf[1 << 22];
  int n = std::vsnprintf(buf, sizeof(buf), format, args);
  if (n <= 0) return n;
  std::string_view msg(buf, static_cast<std::size_t>(n) < sizeof(buf) ? n : sizeof(buf) - 1);
  while (!msg.empty() && msg.back() == '\n') msg.remove_suffix(1);
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
