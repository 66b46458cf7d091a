// Small file helpers for /proc and /sys reads.
#pragma once

#include <fstream>
#include <string>

namespace isoscope {

// The first line of a file without its newline; empty when unreadable.
inline std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace isoscope
