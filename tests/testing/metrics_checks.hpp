// Helpers shared by the unit tests of the Prometheus exporters.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "correlator/breakdown.hpp"

namespace isoscope::testing {

// A workload as the exporters label it.
inline correlator::TargetInfo Workload(const std::string& cgroup, const std::string& pod = "",
                                       const std::string& container = "") {
  correlator::TargetInfo t;
  t.cgroup = cgroup;
  t.pod_uid = pod;
  t.container_id = container;
  return t;
}

inline constexpr const char* kPromtool = "/usr/bin/promtool";
inline bool HavePromtool() { return access(kPromtool, X_OK) == 0; }

// `promtool check metrics` accepts `scrape` (the text exposition format).
inline void ExpectPromtoolAccepts(const std::string& scrape) {
  char path[] = "/tmp/isoscope_scrape_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream out(path);
    out << scrape;
  }
  const std::string command = std::string(kPromtool) + " check metrics < " + path;
  const int rc = std::system(command.c_str());
  std::remove(path);
  ASSERT_NE(rc, -1);
  EXPECT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 0);
}

}  // namespace isoscope::testing
