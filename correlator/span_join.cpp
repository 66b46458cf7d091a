#include "correlator/span_join.hpp"

#include <algorithm>
#include <cstring>

namespace isoscope::correlator {

std::string_view BindingName(Binding binding) {
  switch (binding) {
    case Binding::kThread:
      return "thread";
    case Binding::kProcess:
      return "process";
    case Binding::kNone:
      break;
  }
  return "none";
}

std::string EvidenceStore::BindingKey(const TraceId& trace, const SpanId& parent) {
  std::string key(trace.size() + parent.size(), '\0');
  std::memcpy(key.data(), trace.data(), trace.size());
  std::memcpy(key.data() + trace.size(), parent.data(), parent.size());
  return key;
}

void EvidenceStore::AddDelay(const iso_rec_delay& rec) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& segs = segments_[rec.hdr.tid];
  if (segs.empty()) {
    auto& tids = threads_of_[rec.hdr.tgid];
    if (std::find(tids.begin(), tids.end(), rec.hdr.tid) == tids.end()) tids.push_back(rec.hdr.tid);
  }
  segs.push_back({rec.start_ns, rec.hdr.ts_ns, rec.cause});
  ++segment_count_;
  ++stats_.delays;
  // Over the memory bound: drop this thread's oldest (a counted loss).
  if (segment_count_ > limits_.max_segments) {
    segs.pop_front();
    --segment_count_;
    ++stats_.evicted;
  }
}

void EvidenceStore::AddBinding(const iso_rec_traceparent& rec) {
  TraceId trace;
  SpanId parent;
  std::memcpy(trace.data(), rec.trace_id, trace.size());
  std::memcpy(parent.data(), rec.parent_span_id, parent.size());
  std::lock_guard<std::mutex> lock(mu_);
  std::string key = BindingKey(trace, parent);
  bindings_[key] = {rec.hdr.tgid, rec.hdr.tid, rec.hdr.ts_ns, rec.hdr.cgroup_v2_id,
                    rec.hdr.cgroup_v1_cpu_id};
  binding_order_.emplace_back(rec.hdr.ts_ns, std::move(key));
  ++stats_.bindings;
  while (binding_order_.size() > limits_.max_bindings) {
    bindings_.erase(binding_order_.front().second);
    binding_order_.pop_front();
    ++stats_.evicted;
  }
}

void EvidenceStore::Expire(std::uint64_t now_boot_ns) {
  if (now_boot_ns < limits_.window_ns) return;
  const std::uint64_t cutoff = now_boot_ns - limits_.window_ns;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = segments_.begin(); it != segments_.end();) {
    auto& segs = it->second;
    while (!segs.empty() && segs.front().end_ns < cutoff) {
      segs.pop_front();
      --segment_count_;
      ++stats_.expired;
    }
    if (segs.empty()) {
      it = segments_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = threads_of_.begin(); it != threads_of_.end();) {
    auto& tids = it->second;
    tids.erase(std::remove_if(tids.begin(), tids.end(),
                              [&](std::uint32_t tid) { return !segments_.count(tid); }),
               tids.end());
    it = tids.empty() ? threads_of_.erase(it) : std::next(it);
  }
  while (!binding_order_.empty() && binding_order_.front().first < cutoff) {
    auto found = bindings_.find(binding_order_.front().second);
    // A key re-bound later keeps its newer entry.
    if (found != bindings_.end() && found->second.ts_ns < cutoff) bindings_.erase(found);
    binding_order_.pop_front();
  }
}

void EvidenceStore::AddThreadWindow(std::uint32_t tid, std::uint64_t start, std::uint64_t end,
                                    Breakdown& out) const {
  std::uint64_t covered = 0;
  auto it = segments_.find(tid);
  if (it != segments_.end()) {
    const auto& segs = it->second;
    // Segments are ordered by end time: skip those that ended before `start`.
    auto first = std::lower_bound(segs.begin(), segs.end(), start,
                                  [](const Segment& s, std::uint64_t t) { return s.end_ns <= t; });
    for (auto s = first; s != segs.end(); ++s) {
      const std::uint64_t lo = std::max(s->start_ns, start);
      const std::uint64_t hi = std::min(s->end_ns, end);
      if (hi <= lo || s->cause >= ISO_CAUSE_MAX) continue;
      out.seconds[s->cause] += static_cast<double>(hi - lo) / 1e9;
      covered += hi - lo;
    }
  }
  const std::uint64_t length = end - start;
  if (covered < length) out.seconds[ISO_CAUSE_APP_ON_CPU] += static_cast<double>(length - covered) / 1e9;
  out.thread_seconds += static_cast<double>(std::max(length, covered)) / 1e9;
}

SpanResult EvidenceStore::Join(const SpanQuery& span) const {
  SpanResult r;
  if (span.end_boot_ns <= span.start_boot_ns) return r;
  std::lock_guard<std::mutex> lock(mu_);
  r.breakdown.interval_s = static_cast<double>(span.end_boot_ns - span.start_boot_ns) / 1e9;

  auto bound = bindings_.find(BindingKey(span.trace_id, span.parent_span_id));
  if (bound != bindings_.end()) {
    r.binding = Binding::kThread;
    r.tgid = bound->second.tgid;
    r.tids = {bound->second.tid};
    r.cgroup_v2_id = bound->second.cgroup_v2_id;
    r.cgroup_v1_cpu_id = bound->second.cgroup_v1_cpu_id;
    AddThreadWindow(bound->second.tid, span.start_boot_ns, span.end_boot_ns, r.breakdown);
    r.breakdown.threads = 1;
    r.verdict = ComputeVerdict(r.breakdown);
    return r;
  }
  if (span.resource_pid) {
    auto threads = threads_of_.find(*span.resource_pid);
    if (threads != threads_of_.end() && !threads->second.empty()) {
      // Which thread served the request is unknown: average the process's
      // threads, and say so through a lower confidence.
      r.binding = Binding::kProcess;
      r.tgid = *span.resource_pid;
      r.tids = threads->second;
      Breakdown sum;
      for (std::uint32_t tid : r.tids) AddThreadWindow(tid, span.start_boot_ns, span.end_boot_ns, sum);
      const double n = static_cast<double>(r.tids.size());
      for (auto& s : sum.seconds) s /= n;
      r.breakdown.seconds = sum.seconds;
      r.breakdown.thread_seconds = sum.thread_seconds / n;
      r.breakdown.threads = 1;
      r.verdict = ComputeVerdict(r.breakdown);
      r.verdict.confidence *= 0.5;
      return r;
    }
  }
  return r;
}

void EvidenceStore::SetWatermark(std::uint64_t ns) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    watermark_ns_ = std::max(watermark_ns_, ns);
  }
  watermark_cv_.notify_all();
}

bool EvidenceStore::WaitForWatermark(std::uint64_t ns, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return watermark_cv_.wait_for(lock, timeout, [&] { return watermark_ns_ >= ns; });
}

EvidenceStats EvidenceStore::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void EvidenceSink::OnRecord(const iso_rec_hdr& hdr, std::span<const std::byte> bytes) {
  if (hdr.kind == ISO_REC_DELAY) {
    iso_rec_delay rec;
    std::memcpy(&rec, bytes.data(), sizeof(rec));
    store_.AddDelay(rec);
  } else if (hdr.kind == ISO_REC_TRACEPARENT) {
    iso_rec_traceparent rec;
    std::memcpy(&rec, bytes.data(), sizeof(rec));
    store_.AddBinding(rec);
  }
}

}  // namespace isoscope::correlator
