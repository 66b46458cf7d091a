// isoscope trace / isoscope record.
#include <signal.h>
#include <sys/stat.h>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <spdlog/spdlog.h>

#include "agent/commands.hpp"
#include "agent/live_source.hpp"
#include "agent/pod_target.hpp"
#include "collectors/container/thread_table.hpp"
#include "collectors/identity/cgroup_identity.hpp"
#include "common/fs.hpp"
#include "correlator/aggregate.hpp"
#include "correlator/vcpu.hpp"
#include "correlator/net_join.hpp"
#include "exporters/json/trace_json.hpp"
#include "exporters/otlp/otlp_pipeline.hpp"
#include "exporters/table/trace_table.hpp"

namespace isoscope {
namespace {

using correlator::DropReasonValue;
using correlator::EnrichOptions;
using correlator::EnrichSpans;
using correlator::EnrichStats;
using correlator::MakeNetLookup;
using correlator::RequestLog;
using correlator::SpanOutcome;
using correlator::TargetNetwork;

void OnStopSignal(int /*sig*/) { LiveSource::RequestStop(); }

bool IsDir(const std::string& path) {
  struct stat st{};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// A "usage" error (bad pid or cgroup) exits 2; anything else exits 1.
struct TargetError {
  Error error;
  bool usage = true;
};

struct Target {
  correlator::TargetFilter filter;
  correlator::TargetInfo info;
  std::string v2_dir;  // cgroup directories whose subtree is the target
  std::string v1_dir;

  // Takes a pod target's names and cgroup directories (the filter follows at RefreshSubtree).
  void Follow(const PodTarget& pod, const std::string& cgroup_mode) {
    info = pod.info();
    info.cgroup_mode = cgroup_mode;
    v2_dir = pod.dirs().v2_dir;
    v1_dir = pod.dirs().v1_cpu_dir;
  }

  void RefreshSubtree() {
    if (!v2_dir.empty()) {
      auto ids = identity::SubtreeIds(v2_dir);
      filter.v2_ids = {ids.begin(), ids.end()};
    }
    if (!v1_dir.empty()) {
      auto ids = identity::SubtreeIds(v1_dir);
      filter.v1_cpu_ids = {ids.begin(), ids.end()};
    }
  }
};

using identity::RelativeTo;

std::variant<Target, TargetError> ResolveTarget(std::int32_t pid, const std::string& cgroup,
                                                bool replay) {
  Target t;
  auto mounts = identity::ReadMounts();
  identity::CgroupMounts m = mounts ? *mounts : identity::CgroupMounts{};
  t.info.cgroup_mode = std::string(identity::CgroupModeName(m.mode()));
  const auto cpu_root_it = m.v1_roots.find("cpu");
  const std::string v1_cpu_root = cpu_root_it == m.v1_roots.end() ? "" : cpu_root_it->second;

  if (pid != 0) {
    if (pid < 0) return TargetError{MakeError("invalid pid {}", pid)};
    t.filter.tgid = static_cast<std::uint32_t>(pid);
    t.info.pid = pid;
    const bool alive = kill(pid, 0) == 0 || errno == EPERM;
    if (!alive && !replay) return TargetError{MakeError("no process with pid {}", pid)};
    if (alive) {
      t.info.comm = ReadFirstLine(fmt::format("/proc/{}/comm", pid));
      if (auto read = identity::ReadProcCgroup(pid)) {
        // Relative to the hierarchy roots, also from inside a private cgroup namespace.
        const auto cg = identity::ToHierarchyPaths(*read, m);
        auto v1 = cg.v1_paths.find("cpu");
        const bool v1_placed = v1 != cg.v1_paths.end() && v1->second != "/";
        t.info.cgroup = v1_placed || cg.v2_path.empty() || cg.v2_path == "/"
                            ? (v1 != cg.v1_paths.end() ? v1->second : cg.v2_path)
                            : cg.v2_path;
        auto id = identity::ParseCgroupPath(t.info.cgroup);
        if (id.empty() && !cg.v2_path.empty()) id = identity::ParseCgroupPath(cg.v2_path);
        t.info.pod_uid = id.pod_uid;
        t.info.container_id = id.container_id;
      }
    }
    return t;
  }

  // --cgroup: an absolute directory inside a hierarchy, or a path relative to
  // the hierarchy roots (looked up in the v2 and the v1 cpu hierarchy).
  if (IsDir(cgroup) && (!RelativeTo(cgroup, m.v2_root).empty() ||
                        !RelativeTo(cgroup, v1_cpu_root).empty())) {
    if (!RelativeTo(cgroup, m.v2_root).empty()) {
      t.v2_dir = cgroup;
      t.info.cgroup = RelativeTo(cgroup, m.v2_root);
    } else {
      t.v1_dir = cgroup;
      t.info.cgroup = RelativeTo(cgroup, v1_cpu_root);
    }
  } else {
    const std::string rel = cgroup.empty() || cgroup[0] == '/' ? cgroup : "/" + cgroup;
    if (!m.v2_root.empty() && IsDir(m.v2_root + rel)) t.v2_dir = m.v2_root + rel;
    if (!v1_cpu_root.empty() && IsDir(v1_cpu_root + rel)) t.v1_dir = v1_cpu_root + rel;
    if (t.v2_dir.empty() && t.v1_dir.empty()) {
      return TargetError{MakeError("no cgroup {} (looked in {}{}{})", cgroup,
                                   m.v2_root.empty() ? "" : m.v2_root,
                                   m.v2_root.empty() || v1_cpu_root.empty() ? "" : " and ",
                                   v1_cpu_root)};
    }
    t.info.cgroup = rel;
  }
  // A v2 root target would include every process; say so but allow it.
  auto id = identity::ParseCgroupPath(t.info.cgroup);
  t.info.pod_uid = id.pod_uid;
  t.info.container_id = id.container_id;
  t.RefreshSubtree();
  return t;
}

// Threads of a process as the seed for the tasks map, with their cgroup ids.
void AddProcessThreads(std::int32_t pid, const identity::CgroupMounts& m,
                       std::vector<Probes::SeedThread>& out) {
  std::uint64_t v2 = 0;
  std::uint64_t v1 = 0;
  if (auto read = identity::ReadProcCgroup(pid)) {
    const auto cg = identity::ToHierarchyPaths(*read, m);
    if (!m.v2_root.empty() && !cg.v2_path.empty()) {
      if (auto id = identity::CgroupIdOfPath(m.v2_root + cg.v2_path)) v2 = *id;
    }
    auto root = m.v1_roots.find("cpu");
    auto path = cg.v1_paths.find("cpu");
    if (root != m.v1_roots.end() && path != cg.v1_paths.end()) {
      if (auto id = identity::CgroupIdOfPath(root->second + path->second)) v1 = *id;
    } else if (v2 != 0) {
      v1 = v2;  // pure v2: the cpu controller lives in the v2 hierarchy
    }
  }
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid), ec)) {
    Probes::SeedThread t;
    try {
      t.tid = static_cast<std::uint32_t>(std::stoul(e.path().filename().string()));
    } catch (...) {
      continue;
    }
    t.tgid = static_cast<std::uint32_t>(pid);
    const std::string stat = ReadFirstLine(e.path().string() + "/stat");
    const auto close_paren = stat.rfind(')');
    if (close_paren == std::string::npos || close_paren + 2 >= stat.size()) continue;
    t.state = stat[close_paren + 2];
    t.comm = ReadFirstLine(e.path().string() + "/comm");
    t.cgroup_v2_id = v2;
    t.cgroup_v1_cpu_id = v1;
    out.push_back(std::move(t));
  }
}

// Processes of a cgroup subtree (any hierarchy).
std::vector<std::int32_t> ProcessesIn(const std::string& dir) {
  std::vector<std::int32_t> pids;
  std::error_code ec;
  std::vector<std::filesystem::path> dirs = {dir};
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec)) dirs.push_back(it->path());
  }
  for (const auto& d : dirs) {
    std::ifstream in(d / "cgroup.procs");
    std::int32_t pid = 0;
    while (in >> pid) pids.push_back(pid);
  }
  return pids;
}

Result<std::unique_ptr<source::EventSource>> OpenSource(const CommonOptions& c, std::int32_t pid,
                                                        double duration_s,
                                                        const std::string& replay,
                                                        const std::vector<std::int32_t>& seed) {
  if (!replay.empty()) {
    auto r = source::ReplaySource::Open(replay);
    if (!r) return r.error();
    return std::unique_ptr<source::EventSource>(std::move(*r));
  }
  KernelFeatureProber prober;
  LoadOptions lo;
  lo.filter_tgid = static_cast<std::uint32_t>(pid > 0 ? pid : 0);
  lo.stream_min_ns = c.stream_min_us * 1000;
  lo.max_threads = c.max_threads;
  lo.no_optional = c.no_optional_probes;
  lo.no_tp_btf = c.no_tp_btf;
  lo.track_kthreads = c.kthreads;
  auto probes = Probes::Open(lo, prober);
  if (!probes) return probes.error();
  if (!seed.empty()) {
    std::vector<Probes::SeedThread> threads;
    auto mounts = identity::ReadMounts();
    for (std::int32_t p : seed) AddProcessThreads(p, mounts ? *mounts : identity::CgroupMounts{}, threads);
    const std::size_t added = (*probes)->Seed(threads, source::BootNs());
    spdlog::debug("seeded {} of {} existing threads", added, threads.size());
  }
  LiveSource::Options so;
  so.interval = std::chrono::milliseconds(static_cast<std::int64_t>(c.interval_s * 1000));
  so.duration = std::chrono::milliseconds(static_cast<std::int64_t>(duration_s * 1000));
  auto live = LiveSource::Create(std::move(*probes), so);
  if (!live) return live.error();
  return std::unique_ptr<source::EventSource>(std::move(*live));
}

void LogDrops(const source::SourceStats& s) {
  if (s.lost_ringbuf || s.lost_tasks_full || s.invalid) {
    spdlog::warn("records lost: ring buffer full {}, tasks map full {}, invalid {}", s.lost_ringbuf,
                 s.lost_tasks_full, s.invalid);
  }
}

}  // namespace

void InstallStopHandlers() {
  struct sigaction sa{};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

int RunTrace(const TraceOptions& o) {
  // A pod target (agent/pod_target.hpp) is followed while traced; a pid or cgroup target is
  // resolved once.
  std::unique_ptr<PodTarget> pod;
  Target target;
  if (!o.pod.empty() || !o.pod_uid.empty() || !o.container_id.empty()) {
    if (!o.replay.empty()) {
      std::fprintf(stderr,
                   "isoscope trace: a pod is resolved on the live node; replay a "
                   "recording with --cgroup or --pid\n");
      return kExitUsage;
    }
    auto mounts = identity::ReadMounts();
    const identity::CgroupMounts m = mounts ? *mounts : identity::CgroupMounts{};
    PodTargetOptions po;
    po.query.name = o.pod;
    po.query.namespace_name = o.namespace_name;
    po.query.container = o.container;
    po.query.pod_uid = o.pod_uid;
    po.query.container_id = o.container_id;
    po.cri_endpoint = o.cri_endpoint;
    auto r = PodTarget::Resolve(po, m);
    if (auto* err = std::get_if<PodTargetError>(&r)) {
      std::fprintf(stderr, "isoscope trace: %s\n", err->error.message.c_str());
      return err->usage ? kExitUsage : kExitFailure;
    }
    pod = std::get<std::unique_ptr<PodTarget>>(std::move(r));
    target.Follow(*pod, std::string(identity::CgroupModeName(m.mode())));
    target.RefreshSubtree();
  } else {
    auto resolved = ResolveTarget(o.pid, o.cgroup, !o.replay.empty());
    if (auto* err = std::get_if<TargetError>(&resolved)) {
      std::fprintf(stderr, "isoscope trace: %s\n", err->error.message.c_str());
      return err->usage ? kExitUsage : kExitFailure;
    }
    target = std::get<Target>(std::move(resolved));
  }

  std::vector<std::int32_t> seed;
  if (o.replay.empty()) {
    if (o.pid > 0) seed.push_back(o.pid);
    for (const auto* dir : {&target.v2_dir, &target.v1_dir}) {
      if (dir->empty()) continue;
      for (std::int32_t p : ProcessesIn(*dir)) seed.push_back(p);
    }
  }
  auto src = OpenSource(o.common, o.pid, o.duration_s, o.replay, seed);
  if (!src) {
    std::fprintf(stderr, "isoscope trace: %s\n", src.error().message.c_str());
    return kExitFailure;
  }
  InstallStopHandlers();
  const bool live = o.replay.empty();
  const double max_s = o.duration_s;
  double elapsed_s = 0;
  bool target_gone = false;

  // Requests (--otlp-listen, --otlp-http-listen): spans joined to the evidence of this run
  // (docs/otlp-correlation.md); network evidence for their flows and for the
  // target's network section (docs/network.md).
  correlator::EvidenceStore evidence;
  correlator::EvidenceSink evidence_sink(evidence);
  network::NetEvidence net_evidence;
  network::NetEvidenceSink net_sink(net_evidence);
  TargetNetwork target_net(target.filter);
  RequestLog requests;
  EnrichStats enrich_stats;
  std::unique_ptr<otlp::OtlpPipeline> pipeline;
  if (!o.otlp_listen.empty() || !o.otlp_http_listen.empty()) {
    otlp::PipelineOptions po;
    po.listen = o.otlp_listen;
    po.http_listen = o.otlp_http_listen;
    auto created = otlp::OtlpPipeline::Create(po);
    if (created) {
      pipeline = std::move(*created);
      EnrichOptions eo;
      eo.net = MakeNetLookup(net_evidence);
      pipeline->SetEnricher([&, eo](otlp::TraceRequest& req, const otlp::PeerInfo& peer) {
        EnrichSpans(req, evidence, enrich_stats,
                    [&](const SpanOutcome& outcome) { requests.Add(outcome); }, eo, peer.address);
      });
    }
    if (auto started = created ? pipeline->Start() : Status(created.error()); !started) {
      std::fprintf(stderr, "isoscope trace: %s\n", started.error().message.c_str());
      return kExitUsage;
    }
  }
  std::vector<std::string> drop_names;
  if (live) drop_names = KernelDropReasonNames();
  const std::uint16_t old_data = DropReasonValue(drop_names, "tcp_old_data");
  net_evidence.SetOldDataReason(old_data);
  target_net.SetOldDataReason(old_data);

  container::ThreadTable table([&](const container::IntervalSample& sample) {
    correlator::IntervalReport report;
    if (pod) {  // follow the pod: restarts, re-created sandboxes, deletion
      report.notes = pod->Follow();
      target.Follow(*pod, target.info.cgroup_mode);
    }
    report.target = target.info;
    report.start_ns = sample.start_ns;
    report.end_ns = sample.end_ns;
    report.breakdown = correlator::Aggregate(sample, target.filter);
    report.verdict = correlator::ComputeVerdict(report.breakdown);
    report.vcpus = correlator::BuildVcpuSection(sample, target.filter);
    report.node = correlator::BuildNodeSteal(sample);
    std::vector<int> pids;
    if (live) {
      if (o.pid > 0) pids.push_back(o.pid);
      for (const auto* dir : {&target.v2_dir, &target.v1_dir}) {
        if (!dir->empty()) {
          for (std::int32_t p : ProcessesIn(*dir)) pids.push_back(p);
        }
      }
    }
    report.network = target_net.Close(sample.start_ns, sample.end_ns, pids, drop_names);
    report.requests = requests.Take(target.filter);
    evidence.Expire(sample.end_ns);
    net_evidence.Expire(sample.end_ns);
    elapsed_s += report.breakdown.interval_s;
    if (o.json) {
      std::cout << exporters::TraceIntervalJson(report).dump() << '\n';
      for (const auto& r : report.requests) std::cout << exporters::TraceRequestJson(r).dump() << '\n';
    } else {
      std::cout << exporters::RenderTraceTable(report, isatty(1) != 0, o.vcpus) << '\n';
    }
    std::cout.flush();
  });

  // --record: the same live records go to a file as they reach the collector,
  // so a replay of that file reproduces this run's output.
  std::unique_ptr<source::RecordWriter> writer;
  if (!o.record.empty()) {
    auto w = source::RecordWriter::Create(o.record);
    if (!w) {
      std::fprintf(stderr, "isoscope trace: %s\n", w.error().message.c_str());
      return kExitUsage;
    }
    writer = std::move(*w);
  }
  std::vector<source::RecordSink*> sinks;
  if (writer) sinks.push_back(writer.get());
  // Evidence first: the interval callback (in `table`) reads it.
  for (source::RecordSink* s : {static_cast<source::RecordSink*>(&evidence_sink),
                                static_cast<source::RecordSink*>(&net_sink),
                                static_cast<source::RecordSink*>(&target_net)}) {
    sinks.push_back(s);
  }
  sinks.push_back(&table);
  source::TeeSink sink(sinks);

  while (true) {
    auto more = (*src)->NextInterval(sink);
    if (!more) {
      std::fprintf(stderr, "isoscope trace: %s\n", more.error().message.c_str());
      LogDrops((*src)->stats());
      return kExitFailure;
    }
    if (!*more) break;
    if (!live && max_s > 0 && elapsed_s >= max_s - 1e-9) break;
    if (live && o.pid > 0 && kill(o.pid, 0) != 0 && errno == ESRCH) {
      target_gone = true;
      break;
    }
    if (pod && pod->gone()) break;  // said in the last interval's notes
    if (!target.v2_dir.empty() || !target.v1_dir.empty()) target.RefreshSubtree();
  }
  if (pipeline) pipeline->Stop();
  if (target_gone) std::fprintf(stderr, "isoscope trace: process %d exited\n", o.pid);
  if (target_net.overflow() || requests.dropped()) {
    spdlog::warn("not shown: {} network records over the per-interval bound, {} requests over "
                 "the request log bound",
                 target_net.overflow(), requests.dropped());
  }
  LogDrops((*src)->stats());
  if (writer) {
    if (auto closed = writer->Close(); !closed) {
      std::fprintf(stderr, "isoscope trace: %s\n", closed.error().message.c_str());
      return kExitFailure;
    }
  }
  return kExitOk;
}

int RunRecord(const RecordOptions& o) {
  if (o.pid < 0 || (o.pid > 0 && kill(o.pid, 0) != 0 && errno == ESRCH)) {
    std::fprintf(stderr, "isoscope record: no process with pid %d\n", o.pid);
    return kExitUsage;
  }
  auto writer = source::RecordWriter::Create(o.output);
  if (!writer) {
    std::fprintf(stderr, "isoscope record: %s\n", writer.error().message.c_str());
    return kExitUsage;
  }
  std::vector<std::int32_t> seed;
  if (o.pid > 0) seed.push_back(o.pid);
  auto src = OpenSource(o.common, o.pid, o.duration_s, "", seed);
  if (!src) {
    std::fprintf(stderr, "isoscope record: %s\n", src.error().message.c_str());
    return kExitFailure;
  }
  InstallStopHandlers();
  std::uint64_t intervals = 0;
  while (true) {
    auto more = (*src)->NextInterval(**writer);
    if (!more) {
      std::fprintf(stderr, "isoscope record: %s\n", more.error().message.c_str());
      return kExitFailure;
    }
    ++intervals;
    if (!*more) break;
  }
  auto closed = (*writer)->Close();
  if (!closed) {
    std::fprintf(stderr, "isoscope record: %s\n", closed.error().message.c_str());
    return kExitFailure;
  }
  LogDrops((*src)->stats());
  std::fprintf(stderr, "isoscope record: %llu records, %llu intervals written to %s\n",
               static_cast<unsigned long long>((*writer)->records()),
               static_cast<unsigned long long>(intervals), o.output.c_str());
  return kExitOk;
}

}  // namespace isoscope
