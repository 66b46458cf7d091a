// The CLI11 subcommands. Each Run* returns the process exit code:
// 0 success, 1 runtime failure (e.g. BPF unavailable), 2 usage error (e.g. a
// missing pid or cgroup).
#pragma once

#include <cstdint>
#include <string>

namespace isoscope {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

struct CommonOptions {
  double interval_s = 1.0;
  std::uint64_t stream_min_us = 1000;
  std::uint32_t max_threads = 65536;
  bool no_optional_probes = false;
};

struct TraceOptions {
  CommonOptions common;
  std::int32_t pid = 0;
  std::string cgroup;
  double duration_s = 0;  // 0: until interrupted (or end of replay)
  bool json = false;
  std::string replay;
  std::string record;  // also write the live records to this file
};
int RunTrace(const TraceOptions& options);

struct RecordOptions {
  CommonOptions common;
  std::int32_t pid = 0;
  double duration_s = 10;
  std::string output;
};
int RunRecord(const RecordOptions& options);

struct DoctorOptions {
  bool json = false;
};
int RunDoctor(const DoctorOptions& options);

struct AgentOptions {
  CommonOptions common;
  std::string metrics_addr = "127.0.0.1:9464";
  std::size_t max_workloads = 256;
  double duration_s = 0;  // 0: until SIGTERM/SIGINT
};
int RunAgent(const AgentOptions& options);

// Installs SIGINT/SIGTERM handlers that stop the live source cleanly.
void InstallStopHandlers();

}  // namespace isoscope
