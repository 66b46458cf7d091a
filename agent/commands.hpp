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
  bool no_tp_btf = false;
  bool kthreads = false;  // also account kernel threads (node-wide steal sums need them)
};

struct TraceOptions {
  CommonOptions common;
  std::int32_t pid = 0;
  std::string cgroup;
  // A Kubernetes pod (agent/pod_target.hpp): by name (with namespace and container when given),
  // by uid or by container id; named through the CRI socket (cri_endpoint; "" probes the usual
  // ones).
  std::string pod;
  std::string namespace_name;
  std::string container;
  std::string pod_uid;
  std::string container_id;
  std::string cri_endpoint;
  double duration_s = 0;  // 0: until interrupted (or end of replay)
  bool json = false;
  bool vcpus = false;  // table: one line per vCPU thread (JSON always has them)
  std::string replay;
  std::string record;  // also write the live records to this file
  // Receive OTLP spans here ("" = off) and show the target's requests (docs/otlp-correlation.md):
  // OTLP/gRPC on otlp_listen, OTLP/HTTP (protobuf) on otlp_http_listen.
  std::string otlp_listen;
  std::string otlp_http_listen;
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
  std::string cri_endpoint;  // "" = probe the usual CRI sockets
};
int RunDoctor(const DoctorOptions& options);

struct AgentOptions {
  CommonOptions common;
  std::string metrics_addr = "127.0.0.1:9464";
  std::size_t max_workloads = 256;
  double duration_s = 0;  // 0: until SIGTERM/SIGINT
  // OTLP (docs/otlp.md): receiver addresses, gRPC and HTTP ("" = off), upstream collector
  // ("" = none), export queue bound in spans. *_given: the address was on the command line (a
  // busy default port only disables that receiver with a warning; a busy explicit one is an
  // error).
  std::string otlp_listen = "127.0.0.1:4317";
  bool otlp_listen_given = false;
  std::string otlp_http_listen = "127.0.0.1:4318";
  bool otlp_http_listen_given = false;
  std::string otlp_endpoint;
  std::size_t otlp_queue = 8192;
  // Seconds between pushes of the agent's own metrics to otlp_endpoint (0 = never).
  double otlp_metrics_interval_s = 10;
  // A child span per blamable cause of at least this many ms under each enriched span (< 0: none).
  double child_span_min_ms = -1;
  // The CRI socket that names pods and containers ("" = probe the usual ones, "none" = do not
  // ask a runtime: pods by uid only).
  std::string cri_endpoint;
};
int RunAgent(const AgentOptions& options);

// Installs SIGINT/SIGTERM handlers that stop the live source cleanly.
void InstallStopHandlers();

}  // namespace isoscope
