// Logging (docs/coding-guidelines.md, "Logging"): spdlog to stderr, stdout is
// reserved for command output (tables, JSON). libbpf's own messages are routed
// here by InstallLibbpfLogger().
#pragma once

#include <string_view>

#include <spdlog/spdlog.h>

namespace isoscope::log {

// Level names: trace, debug, info, warn, error, off.
void Init(std::string_view level);
// Routes libbpf_print output into spdlog at debug level (the loader reports
// the outcome of every load attempt itself).
void InstallLibbpfLogger();

}  // namespace isoscope::log
