#include "agent/live_source.hpp"

#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>

#include "collectors/hypervisor/proc_steal.hpp"

namespace isoscope {

std::atomic<bool> LiveSource::stop_{false};

void LiveSource::RequestStop() { stop_.store(true); }

Result<std::unique_ptr<LiveSource>> LiveSource::Create(std::unique_ptr<Probes> probes,
                                                       Options options) {
  auto src = std::unique_ptr<LiveSource>(new LiveSource());
  src->probes_ = std::move(probes);
  src->options_ = options;
  src->ring_ = ring_buffer__new(src->probes_->events_fd(), &LiveSource::OnRingRecord, src.get(),
                                nullptr);
  if (!src->ring_) return Error{fmt::format("ring buffer: {}", std::strerror(errno)), errno};
  src->started_ = std::chrono::steady_clock::now();
  stop_.store(false);
  return src;
}

LiveSource::~LiveSource() { ring_buffer__free(ring_); }

int LiveSource::OnRingRecord(void* ctx, void* data, std::size_t len) {
  auto* self = static_cast<LiveSource*>(ctx);
  source::Deliver(data, len, self->stats_, *self->current_sink_);
  return 0;
}

int LiveSource::Drain(source::RecordSink& sink) {
  // Everything submitted before `mark` is in the ring now and is delivered by
  // this consume (it reads until empty): that is the watermark.
  const std::uint64_t mark = source::BootNs();
  const int n = ring_buffer__consume(ring_);
  if (n >= 0) sink.OnWatermark(mark);
  return n;
}

void LiveSource::Snapshot(source::RecordSink& sink) {
  const int fd = probes_->tasks_fd();
  const std::uint64_t now = source::BootNs();
  iso_rec_thread_totals rec{};
  rec.hdr.kind = ISO_REC_THREAD_TOTALS;
  rec.hdr.size = sizeof(rec);
  rec.hdr.abi_version = ISO_ABI_VERSION;
  rec.hdr.ts_ns = now;
  std::uint32_t key = 0;
  std::uint32_t next = 0;
  bool first = true;
  // Keys first, then values: a thread deleted in between is simply skipped.
  std::vector<std::uint32_t> keys;
  while (bpf_map_get_next_key(fd, first ? nullptr : &key, &next) == 0) {
    keys.push_back(next);
    key = next;
    first = false;
  }
  std::unordered_set<std::uint32_t> alive;
  for (std::uint32_t tid : keys) {
    if (bpf_map_lookup_elem(fd, &tid, &rec.t) != 0) continue;
    rec.hdr.tgid = rec.t.tgid;
    rec.hdr.tid = tid;
    rec.hdr.cgroup_v2_id = rec.t.cgroup_v2_id;
    rec.hdr.cgroup_v1_cpu_id = rec.t.cgroup_v1_cpu_id;
    source::Deliver(&rec, sizeof(rec), stats_, sink);
    alive.insert(tid);
  }
  SnapshotExits(sink, now, alive);
  SnapshotNode(sink, now);
  iso_rec_hdr end{};
  end.kind = ISO_REC_SNAPSHOT;
  end.size = sizeof(end);
  end.abi_version = ISO_ABI_VERSION;
  end.ts_ns = now;
  source::Deliver(&end, sizeof(end), stats_, sink);
}

void LiveSource::SnapshotExits(source::RecordSink& sink, std::uint64_t now,
                               const std::unordered_set<std::uint32_t>& alive) {
  const int fd = probes_->vcpu_exits_fd();
  if (fd < 0) return;
  iso_rec_kvm rec{};
  rec.hdr.kind = ISO_REC_KVM;
  rec.hdr.size = sizeof(rec);
  rec.hdr.abi_version = ISO_ABI_VERSION;
  rec.hdr.ts_ns = now;
  std::vector<iso_kvm_exit_key> keys;
  iso_kvm_exit_key key{};
  iso_kvm_exit_key next{};
  bool first = true;
  while (bpf_map_get_next_key(fd, first ? nullptr : &key, &next) == 0) {
    keys.push_back(next);
    key = next;
    first = false;
  }
  for (const auto& k : keys) {
    iso_kvm_exit_val v{};
    if (bpf_map_lookup_elem(fd, &k, &v) != 0) continue;
    rec.hdr.tgid = v.tgid;
    rec.hdr.tid = k.tid;
    rec.hdr.cgroup_v2_id = v.cgroup_v2_id;
    rec.hdr.cgroup_v1_cpu_id = v.cgroup_v1_cpu_id;
    rec.isa = k.isa;
    rec.reason = k.reason;
    rec.count = v.count;
    rec.ns = v.ns;
    source::Deliver(&rec, sizeof(rec), stats_, sink);
    // A thread gone from `tasks` has exited (or was evicted): its final counts are out, its
    // keys go, so the map holds live vCPUs only.
    if (!alive.count(k.tid)) bpf_map_delete_elem(fd, &k);
  }
}

void LiveSource::SnapshotNode(source::RecordSink& sink, std::uint64_t now) {
  const int fd = probes_->cpu_state_fd();
  if (fd < 0) return;
  const int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return;
  std::vector<iso_cpu_state> per_cpu(static_cast<std::size_t>(ncpu));
  const std::uint32_t zero = 0;
  if (bpf_map_lookup_elem(fd, &zero, per_cpu.data()) != 0) return;
  const auto kernel = hypervisor::ReadProcStatSteal();
  iso_rec_node rec{};
  rec.hdr.kind = ISO_REC_NODE;
  rec.hdr.size = sizeof(rec);
  rec.hdr.abi_version = ISO_ABI_VERSION;
  rec.hdr.ts_ns = now;
  for (std::uint32_t cpu = 0; cpu < per_cpu.size(); ++cpu) {
    const auto k = kernel.find(cpu);
    if (k == kernel.end()) continue;  // possible but not online
    rec.hdr.tid = cpu;
    rec.idle_steal_ns = per_cpu[cpu].idle_steal_ns;
    rec.kernel_steal_ns = k->second;
    source::Deliver(&rec, sizeof(rec), stats_, sink);
  }
}

Result<bool> LiveSource::NextInterval(source::RecordSink& sink) {
  current_sink_ = &sink;
  if (!baseline_sent_) {
    // Interval boundaries are snapshots; the first one is the baseline.
    baseline_sent_ = true;
    Drain(sink);
    Snapshot(sink);
  }
  const auto interval_end = std::chrono::steady_clock::now() + options_.interval;
  const auto source_end = options_.duration.count() > 0
                              ? started_ + options_.duration
                              : std::chrono::steady_clock::time_point::max();
  const auto until = std::min(interval_end, source_end);
  while (!stop_.load()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) break;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
        options_.consume_period, until - now));
    int n = Drain(sink);
    if (n < 0 && n != -EINTR) return Error{fmt::format("ring buffer: {}", std::strerror(-n)), -n};
  }
  Drain(sink);
  Snapshot(sink);
  current_sink_ = nullptr;
  const bool more = !stop_.load() && std::chrono::steady_clock::now() < source_end;
  return more;
}

source::SourceStats LiveSource::stats() const {
  source::SourceStats s = stats_;
  const auto bpf = probes_->ReadStats();
  s.lost_ringbuf = bpf[ISO_STAT_RB_RESERVE_FAILED];
  s.lost_tasks_full = bpf[ISO_STAT_TASKS_FULL];
  return s;
}

}  // namespace isoscope
