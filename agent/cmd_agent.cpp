// isoscope agent: node-wide daemon exporting Prometheus metrics.
#include <algorithm>
#include <cstdio>
#include <mutex>

#include <spdlog/spdlog.h>

#include "agent/commands.hpp"
#include "agent/live_source.hpp"
#include "agent/pod_target.hpp"
#include "collectors/container/thread_table.hpp"
#include "correlator/aggregate.hpp"
#include "correlator/vcpu.hpp"
#include "correlator/cgroup_resolver.hpp"
#include "correlator/net_join.hpp"
#include "correlator/peer_resolver.hpp"
#include "correlator/span_enricher.hpp"
#include "exporters/otlp/otlp_metrics_bridge.hpp"
#include "exporters/otlp/otlp_pipeline.hpp"
#include "exporters/prometheus/network_metrics.hpp"
#include "exporters/prometheus/prometheus_exporter.hpp"
#include "exporters/prometheus/request_metrics.hpp"

namespace isoscope {
namespace {

using correlator::CgroupResolver;
using correlator::DropReasonValue;
using correlator::EnrichOptions;
using correlator::EnrichSpans;
using correlator::EnrichStats;
using correlator::MakeNetLookup;
using correlator::NetworkObserver;
using correlator::PeerResolver;
using correlator::SpanObserver;
using correlator::SpanOutcome;

// Evidence forgotten early to respect memory bounds: a loss, counted with the others.
struct EvidenceLosses {
  std::uint64_t delays_evicted = 0;
  std::uint64_t network_evicted = 0;
};

exporters::SelfStats CollectSelfStats(const source::SourceStats& s, const Probes& probes,
                                      const EvidenceLosses& evidence) {
  exporters::SelfStats out;
  for (std::uint16_t k = 1; k < ISO_REC_KIND_MAX; ++k) {
    if (s.received[k] || k <= ISO_REC_DELAY || k == ISO_REC_SNAPSHOT) {
      out.received_by_kind[std::string(source::RecordKindName(k))] += s.received[k];
    }
  }
  out.lost_by_reason = {{"ringbuf_full", s.lost_ringbuf},
                        {"tasks_map_full", s.lost_tasks_full},
                        {"invalid", s.invalid},
                        {"evidence_evicted", evidence.delays_evicted},
                        {"net_evidence_evicted", evidence.network_evicted}};
  // Evidence BPF could not keep because one of its bounded maps was full.
  const auto bpf = probes.ReadStats();
  for (const auto& [stat, reason] :
       {std::pair<int, const char*>{ISO_STAT_NET_SKB_FULL, "net_skb_map_full"},
        {ISO_STAT_NET_SOCK_FULL, "net_sock_map_full"},
        {ISO_STAT_BLK_REQS_FULL, "blk_reqs_map_full"},
        {ISO_STAT_KVM_EXITS_FULL, "kvm_exits_map_full"}}) {
    out.lost_by_reason[reason] = bpf[static_cast<std::size_t>(stat)];
  }
  for (const auto& p : probes.ReadRunStats()) {
    out.programs.push_back({p.name, p.attached, p.run_ns, p.run_cnt});
  }
  return out;
}

// The OTLP receivers (gRPC, HTTP) -> enricher -> exporter path (docs/otlp.md). Returns null when
// both receivers are off (--otlp-listen "" and --otlp-http-listen "") or left off because their
// default address is busy (warned); an error for a bad or busy explicit address. The pipeline's
// metrics go on the agent's registry.
Result<std::unique_ptr<otlp::OtlpPipeline>> StartOtlp(const AgentOptions& o,
                                                      exporters::PrometheusExporter& prom,
                                                      otlp::OtlpPipeline::Enricher enricher) {
  std::unique_ptr<otlp::OtlpPipeline> none;
  auto no_receiver = [&] {
    if (!o.otlp_endpoint.empty()) {
      spdlog::warn("--otlp-endpoint {} gets no spans: the OTLP receivers are off{}",
                   o.otlp_endpoint,
                   o.otlp_metrics_interval_s > 0 ? " (the agent's metrics are still sent)" : "");
    }
  };
  if (o.otlp_listen.empty() && o.otlp_http_listen.empty()) {
    no_receiver();
    return none;
  }
  otlp::PipelineOptions po;
  po.listen = o.otlp_listen;
  po.listen_optional = !o.otlp_listen_given;
  po.http_listen = o.otlp_http_listen;
  po.http_listen_optional = !o.otlp_http_listen_given;
  po.exporter.endpoint = o.otlp_endpoint;
  po.exporter.max_queue_spans = o.otlp_queue;
  auto pipeline = otlp::OtlpPipeline::Create(po);
  if (!pipeline) return pipeline.error();
  (*pipeline)->SetEnricher(std::move(enricher));
  if (auto started = (*pipeline)->Start(); !started) return started.error();
  if (!(*pipeline)->Listening()) {  // both default addresses busy (warned)
    no_receiver();
    return none;
  }
  (*pipeline)->ExposeMetrics(prom.registry());
  return std::move(*pipeline);
}

// Pushes the agent's metrics to --otlp-endpoint every --otlp-metrics-interval seconds; null when
// there is no endpoint or the interval is 0.
Result<std::unique_ptr<otlp::MetricsPusher>> StartMetricsPush(
    const AgentOptions& o, const exporters::PrometheusExporter& prom) {
  if (o.otlp_endpoint.empty() || !(o.otlp_metrics_interval_s > 0)) {
    return std::unique_ptr<otlp::MetricsPusher>();
  }
  otlp::PusherOptions po;
  po.interval = std::chrono::milliseconds(
      std::max<std::int64_t>(1, static_cast<std::int64_t>(o.otlp_metrics_interval_s * 1000)));
  po.bridge.host_name = otlp::HostName();
  po.bridge.start_time_unix_nano = otlp::UnixNanoNow();
  po.exporter.endpoint = o.otlp_endpoint;
  // One snapshot holds every series; room for a few while the collector is away.
  po.exporter.max_queue_points = std::size_t{1} << 16;
  po.exporter.max_batch_points = std::size_t{1} << 14;
  return otlp::MetricsPusher::Start(prom.registry(), po);
}

}  // namespace

int RunAgent(const AgentOptions& o) {
  auto mounts = identity::ReadMounts();
  if (!mounts) {
    std::fprintf(stderr, "isoscope agent: %s\n", mounts.error().message.c_str());
    return kExitFailure;
  }
  // Names cgroup ids (paths, pod and container ids, and the runtime's names). The enricher's
  // gRPC threads never wait on it (describe); the drain thread may walk the cgroup tree for a
  // cgroup it has not seen yet (describe_drain).
  identity::WorkloadIndex::Options wo;
  wo.cri_endpoint = o.cri_endpoint;
  wo.cri = o.cri_endpoint != "none";
  CgroupResolver resolver(*mounts, wo);
  auto describe = [&resolver](correlator::WorkloadKey key) {
    return resolver.Describe(key.id, key.v1);
  };
  auto describe_drain = [&resolver](correlator::WorkloadKey key) {
    return resolver.DescribeOrIndex(key.id, key.v1);
  };

  exporters::PrometheusExporter prom(o.max_workloads);
  if (auto served = prom.Serve(o.metrics_addr); !served) {
    std::fprintf(stderr, "isoscope agent: %s\n", served.error().message.c_str());
    return kExitUsage;
  }
  // Kernel evidence for spans: streamed delays and traceparent bindings,
  // kept for a window so that late spans still join (docs/otlp-correlation.md).
  correlator::EvidenceStore evidence;
  correlator::EvidenceSink evidence_sink(evidence);
  EnrichStats enrich_stats;
  exporters::RequestMetrics request_metrics(prom.registry(), o.max_workloads);
  const SpanObserver observe_span = [&](const SpanOutcome& span) {
    correlator::TargetInfo workload;  // unknown: empty labels
    if (span.result.cgroup_v2_id != 0 || span.result.cgroup_v1_cpu_id != 0) {
      workload =
          describe(correlator::WorkloadOf(span.result.cgroup_v2_id, span.result.cgroup_v1_cpu_id));
    }
    request_metrics.OnSpan(span, workload);
  };
  // Network evidence (docs/network.md): joined to spans by flow, and node-wide metrics.
  network::NetEvidence net_evidence;
  network::NetEvidenceSink net_sink(net_evidence);
  net_evidence.SetOldDataReason(DropReasonValue(KernelDropReasonNames(), "tcp_old_data"));
  exporters::NetworkMetrics net_metrics(prom.registry(), o.max_workloads);
  NetworkObserver net_observer([&](const network::NetInterval& i, correlator::WorkloadKey owner) {
    net_metrics.OnInterval(i, owner.id != 0 ? describe_drain(owner) : correlator::TargetInfo{});
  });
  PeerResolver peers;
  EnrichOptions enrich;
  enrich.net = MakeNetLookup(net_evidence);
  enrich.describe = [&describe](std::uint64_t v2, std::uint64_t v1) {
    return describe(correlator::WorkloadOf(v2, v1));
  };
  enrich.peer_process = [&peers](const std::string& uri) { return peers.Resolve(uri); };
  enrich.node_name = PodTarget::NodeName();
  enrich.child_span_min_s = o.child_span_min_ms < 0 ? -1.0 : o.child_span_min_ms / 1e3;
  auto otlp_pipeline =
      StartOtlp(o, prom, [&](otlp::TraceRequest& req, const otlp::PeerInfo& peer) {
        EnrichSpans(req, evidence, enrich_stats, observe_span, enrich, peer.address);
      });
  if (!otlp_pipeline) {
    std::fprintf(stderr, "isoscope agent: %s\n", otlp_pipeline.error().message.c_str());
    return kExitUsage;
  }
  auto metrics_push = StartMetricsPush(o, prom);
  if (!metrics_push) {
    std::fprintf(stderr, "isoscope agent: %s\n", metrics_push.error().message.c_str());
    return kExitUsage;
  }

  KernelFeatureProber prober;
  LoadOptions lo;
  lo.stream_min_ns = o.common.stream_min_us * 1000;
  lo.max_threads = o.common.max_threads;
  lo.no_optional = o.common.no_optional_probes;
  lo.no_tp_btf = o.common.no_tp_btf;
  lo.track_kthreads = o.common.kthreads;
  auto probes = Probes::Open(lo, prober);
  if (!probes) {
    // Keep serving self-metrics so the failure is visible to monitoring, but
    // say clearly that no evidence will come.
    std::fprintf(stderr, "isoscope agent: %s\n", probes.error().message.c_str());
    return kExitFailure;
  }
  LiveSource::Options so;
  so.interval = std::chrono::milliseconds(static_cast<std::int64_t>(o.common.interval_s * 1000));
  so.duration = std::chrono::milliseconds(static_cast<std::int64_t>(o.duration_s * 1000));
  auto live = LiveSource::Create(std::move(*probes), so);
  if (!live) {
    std::fprintf(stderr, "isoscope agent: %s\n", live.error().message.c_str());
    return kExitFailure;
  }
  InstallStopHandlers();
  spdlog::info("agent running: metrics on http://{}/metrics", o.metrics_addr);

  container::ThreadTable table([&](const container::IntervalSample& sample) {
    std::vector<correlator::IntervalReport> reports;
    for (auto& [key, breakdown] : correlator::AggregateByCgroup(sample)) {
      correlator::IntervalReport r;
      r.target = describe_drain(key);
      r.start_ns = sample.start_ns;
      r.end_ns = sample.end_ns;
      r.breakdown = breakdown;
      r.verdict = correlator::ComputeVerdict(breakdown);
      correlator::TargetFilter only;
      (key.v1 ? only.v1_cpu_ids : only.v2_ids).insert(key.id);
      r.vcpus = correlator::BuildVcpuSection(sample, only);
      reports.push_back(std::move(r));
    }
    prom.OnInterval(reports);
    {
      std::map<std::uint32_t, double> per_cpu;
      for (const auto& [cpu, ns] : sample.node_steal.kernel_ns_per_cpu) {
        per_cpu[cpu] = static_cast<double>(ns) / 1e9;
      }
      prom.OnNodeSteal(correlator::BuildNodeSteal(sample), per_cpu);
    }
    evidence.Expire(sample.end_ns);
    net_evidence.Expire(sample.end_ns);
    for (const auto& d : sample.delays) {
      const auto key = correlator::WorkloadOf(d.hdr.cgroup_v2_id, d.hdr.cgroup_v1_cpu_id);
      prom.OnDelay(d.cause, static_cast<double>(d.hdr.ts_ns - d.start_ns) / 1e9,
                   describe_drain(key));
    }
  });

  source::TeeSink sink({&evidence_sink, &net_sink, &net_observer, &table});
  while (true) {
    auto more = (*live)->NextInterval(sink);
    const EvidenceLosses losses{evidence.stats().evicted, net_evidence.Stats().evicted};
    prom.SetSelfStats(CollectSelfStats((*live)->stats(), (*live)->probes(), losses));
    std::map<std::string, std::uint64_t> drops;
    for (const auto& d : (*live)->probes().ReadDropReasons()) drops[d.name] += d.count;
    net_metrics.SetDrops(drops);
    request_metrics.SetEnrichStats(enrich_stats);
    if (!more) {
      spdlog::error("{}", more.error().message);
      return kExitFailure;
    }
    if (!*more) break;
  }
  if (*otlp_pipeline) (*otlp_pipeline)->Stop();  // flushes the export queue (bounded)
  request_metrics.SetEnrichStats(enrich_stats);
  if (*metrics_push) (*metrics_push)->Stop();  // a last push with the totals (bounded)
  spdlog::info("agent stopping: probes detached");
  return kExitOk;
}

}  // namespace isoscope
