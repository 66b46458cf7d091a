// Small file helpers for /proc and /sys reads.
#pragma once

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include <fmt/format.h>

#include "common/result.hpp"

namespace isoscope {

// The first line of a file without its newline; empty when unreadable.
inline std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// A whole file; the error names the path and carries errno.
inline Result<std::string> ReadFileText(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    const int err = errno;
    return Error{fmt::format("open {}: {}", path, std::strerror(err)), err};
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return MakeError("read {}", path);
  return text.str();
}

}  // namespace isoscope
