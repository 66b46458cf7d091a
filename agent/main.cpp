// isoscope: which isolation layer made it slow.
#include <CLI/CLI.hpp>

#include "agent/commands.hpp"
#include "common/log.hpp"

int main(int argc, char** argv) {
  using namespace isoscope;
  CLI::App app{"isoscope: per-request and per-cgroup latency attribution to isolation layers"};
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
      ->capture_default_str();

  auto add_common = [](CLI::App* cmd, CommonOptions& c) {
    cmd->add_option("--interval", c.interval_s, "seconds per interval")
        ->capture_default_str()
        ->check(CLI::Range(0.05, 3600.0));
    cmd->add_option("--stream-min-us", c.stream_min_us,
                    "stream delays at least this long (us) for per-request joins")
        ->capture_default_str();
    cmd->add_option("--max-threads", c.max_threads, "threads tracked in the kernel")
        ->capture_default_str();
    cmd->add_flag("--no-optional-probes", c.no_optional_probes,
                  "tracepoints only: switch off optional kprobe/fentry programs");
    cmd->add_flag("--no-tp-btf", c.no_tp_btf,
                  "use the raw_tp fallback programs instead of BTF-typed tracepoints");
    cmd->add_flag("--kthreads", c.kthreads,
                  "also account kernel threads (by default only user threads are tracked)");
  };

  TraceOptions trace;
  auto* trace_cmd =
      app.add_subcommand("trace", "per-interval breakdown for a pod, a process or a cgroup");
  auto* pod_opt = trace_cmd->add_option("pod", trace.pod, "pod name (on this node)");
  trace_cmd->add_option("-n,--namespace", trace.namespace_name,
                        "the pod's namespace (default: any; a name in several must choose)");
  trace_cmd->add_option("-c,--container", trace.container,
                        "only this container of the pod (default: every container)");
  auto* uid_opt = trace_cmd->add_option("--pod-uid", trace.pod_uid, "pod UID");
  auto* cid_opt =
      trace_cmd->add_option("--container-id", trace.container_id, "container id (or a prefix)");
  trace_cmd->add_option("--cri-endpoint", trace.cri_endpoint,
                        "CRI socket naming the pods (default: probe containerd, CRI-O, ...)");
  auto* pid_opt = trace_cmd->add_option("--pid", trace.pid, "process id");
  auto* cg_opt = trace_cmd->add_option("--cgroup", trace.cgroup,
                                       "cgroup directory (absolute, or relative to a hierarchy)");
  // One target: a pod (by name, uid or container id), a process or a cgroup.
  const std::vector<CLI::Option*> targets = {pod_opt, uid_opt, cid_opt, pid_opt, cg_opt};
  for (auto* a : targets) {
    for (auto* b : targets) {
      if (a != b) a->excludes(b);
    }
  }
  trace_cmd->add_option("--duration", trace.duration_s, "seconds to run (0: until Ctrl-C)");
  trace_cmd->add_flag("--json", trace.json, "one JSON object per line per interval");
  trace_cmd->add_flag("--vcpus", trace.vcpus,
                      "one line per vCPU thread of a VMM target (guest, exits, VMM, steal)");
  trace_cmd->add_option("--otlp-listen", trace.otlp_listen,
                        "receive OTLP/gRPC spans on HOST:PORT and show the target's requests");
  trace_cmd->add_option("--otlp-http-listen", trace.otlp_http_listen,
                        "receive OTLP/HTTP (protobuf) spans on HOST:PORT and show the target's "
                        "requests");
  auto* replay_opt =
      trace_cmd->add_option("--replay", trace.replay, "read a recording instead of the kernel");
  trace_cmd->add_option("--record", trace.record, "also record the live input to this file")
      ->excludes(replay_opt);
  add_common(trace_cmd, trace.common);

  RecordOptions record;
  auto* record_cmd = app.add_subcommand("record", "record kernel evidence to a file for replay");
  record_cmd->add_option("--pid", record.pid, "only this process (default: all)");
  record_cmd->add_option("--duration", record.duration_s, "seconds")->capture_default_str();
  record_cmd->add_option("-o,--output", record.output, "recording file")->required();
  add_common(record_cmd, record.common);

  DoctorOptions doctor;
  auto* doctor_cmd = app.add_subcommand("doctor", "which probes and layers work on this kernel");
  doctor_cmd->add_flag("--json", doctor.json, "machine-readable output");
  doctor_cmd->add_option("--cri-endpoint", doctor.cri_endpoint,
                         "CRI socket to check (default: probe containerd, CRI-O, ...)");

  AgentOptions agent;
  auto* agent_cmd = app.add_subcommand("agent", "node-wide daemon with Prometheus /metrics");
  agent_cmd->add_option("--metrics-addr", agent.metrics_addr, "host:port for /metrics")
      ->capture_default_str();
  agent_cmd->add_option("--max-workloads", agent.max_workloads,
                        "label sets per metric before folding into cgroup=\"other\"")
      ->capture_default_str();
  agent_cmd->add_option("--duration", agent.duration_s, "seconds to run (0: until SIGTERM)");
  agent_cmd->add_option("--cri-endpoint", agent.cri_endpoint,
                        "CRI socket naming pods and containers (default: probe containerd, CRI-O, "
                        "...; \"none\": pods by uid only)");
  auto* otlp_listen_opt =
      agent_cmd
          ->add_option("--otlp-listen", agent.otlp_listen,
                       "host:port for the OTLP/gRPC receiver (\"\" switches it off)")
          ->capture_default_str();
  auto* otlp_http_listen_opt =
      agent_cmd
          ->add_option("--otlp-http-listen", agent.otlp_http_listen,
                       "host:port for the OTLP/HTTP (protobuf) receiver (\"\" switches it off)")
          ->capture_default_str();
  agent_cmd->add_option("--otlp-endpoint", agent.otlp_endpoint,
                        "host:port of an OTLP/gRPC collector to forward spans to (default: none)");
  agent_cmd->add_option("--otlp-queue", agent.otlp_queue, "spans queued for export at most")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24));
  agent_cmd
      ->add_option("--otlp-metrics-interval", agent.otlp_metrics_interval_s,
                   "seconds between pushes of the agent's metrics to --otlp-endpoint (0: off)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  agent_cmd->add_option("--child-span-min-ms", agent.child_span_min_ms,
                        "add a child span per isolation/network cause of at least this many ms to "
                        "each enriched span (default: none)");
  add_common(agent_cmd, agent.common);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  log::Init(log_level);
  log::InstallLibbpfLogger();

  if (*trace_cmd) {
    if (trace.pid == 0 && trace.cgroup.empty() && trace.pod.empty() && trace.pod_uid.empty() &&
        trace.container_id.empty()) {
      std::fprintf(stderr,
                   "isoscope trace: give a pod (POD [-n NAMESPACE] [-c CONTAINER], --pod-uid UID "
                   "or --container-id ID), --pid PID or --cgroup PATH\n");
      return kExitUsage;
    }
    if ((!trace.namespace_name.empty() || !trace.container.empty()) && trace.pod.empty() &&
        trace.pod_uid.empty()) {
      std::fprintf(stderr, "isoscope trace: -n/-c go with a pod name or --pod-uid\n");
      return kExitUsage;
    }
    return RunTrace(trace);
  }
  if (*record_cmd) return RunRecord(record);
  if (*doctor_cmd) return RunDoctor(doctor);
  if (*agent_cmd) {
    agent.otlp_listen_given = otlp_listen_opt->count() > 0;
    agent.otlp_http_listen_given = otlp_http_listen_opt->count() > 0;
    return RunAgent(agent);
  }
  return kExitUsage;
}
