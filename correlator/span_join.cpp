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
    case Binding::kContainer:
      return "container";
    case Binding::kPod:
      return "pod";
    case Binding::kPeer:
      return "peer";
    case Binding::kNone:
      break;
  }
  return "none";
}

namespace {

// Which network mechanism wins a moment several intervals cover: protocol,
// then queue, then scheduling (docs/network.md).
int NetRank(abi::Cause cause) {
  if (cause < ISO_CAUSE_NETWORK_BASE || cause >= ISO_CAUSE_MAX) return 0;
  switch ((cause - ISO_CAUSE_NETWORK_BASE) % ISO_NET_MECHANISM_MAX) {
    case ISO_NET_PROTOCOL:
      return 3;
    case ISO_NET_QUEUE:
      return 2;
    default:
      return 1;
  }
}

// Adds [lo, hi) of a thread in its own (app) time `app_cause`: the moments a
// network interval covers go to the best-ranked network cause covering them.
void OverlayNetwork(std::uint64_t lo, std::uint64_t hi, abi::Cause app_cause,
                    const std::vector<NetPiece>& net, Breakdown& out) {
  std::vector<std::uint64_t> cuts{lo, hi};
  for (const auto& n : net) {
    if (n.start_ns > lo && n.start_ns < hi) cuts.push_back(n.start_ns);
    if (n.end_ns > lo && n.end_ns < hi) cuts.push_back(n.end_ns);
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  for (std::size_t i = 0; i + 1 < cuts.size(); ++i) {
    const std::uint64_t a = cuts[i];
    const std::uint64_t b = cuts[i + 1];
    abi::Cause cause = app_cause;
    int best = 0;
    for (const auto& n : net) {
      if (n.idle_only && app_cause == ISO_CAUSE_APP_ON_CPU) continue;
      if (n.start_ns <= a && n.end_ns >= b && NetRank(n.cause) > best) {
        best = NetRank(n.cause);
        cause = n.cause;
      }
    }
    out.seconds[cause] += static_cast<double>(b - a) / 1e9;
  }
}

}  // namespace

std::string EvidenceStore::BindingKey(const TraceId& trace, const SpanId& parent, bool outbound) {
  std::string key(1 + trace.size() + parent.size(), '\0');
  key[0] = outbound ? 'o' : 'i';
  std::memcpy(key.data() + 1, trace.data(), trace.size());
  std::memcpy(key.data() + 1 + trace.size(), parent.data(), parent.size());
  return key;
}

void EvidenceStore::AddDelay(const iso_rec_delay& rec) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& segs = segments_[rec.hdr.tid];
  if (segs.empty()) {
    auto& tids = threads_of_[rec.hdr.tgid];
    if (std::find(tids.begin(), tids.end(), rec.hdr.tid) == tids.end()) tids.push_back(rec.hdr.tid);
  }
  cgroups_of_[rec.hdr.tgid] = {rec.hdr.cgroup_v2_id, rec.hdr.cgroup_v1_cpu_id};
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
  SocketTuple socket;
  socket.sock = rec.sock;
  socket.family = rec.family;
  std::memcpy(socket.local.data(), rec.saddr, socket.local.size());
  std::memcpy(socket.peer.data(), rec.daddr, socket.peer.size());
  socket.local_port = rec.sport;
  socket.peer_port = rec.dport;
  std::lock_guard<std::mutex> lock(mu_);
  std::string key = BindingKey(trace, parent, (rec.flags & ISO_TP_F_OUTBOUND) != 0);
  bindings_[key] = {rec.hdr.tgid, rec.hdr.tid, rec.hdr.ts_ns, rec.hdr.cgroup_v2_id,
                    rec.hdr.cgroup_v1_cpu_id, socket};
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
    if (tids.empty()) {
      cgroups_of_.erase(it->first);
      it = threads_of_.erase(it);
    } else {
      ++it;
    }
  }
  while (!binding_order_.empty() && binding_order_.front().first < cutoff) {
    auto found = bindings_.find(binding_order_.front().second);
    // A key re-bound later keeps its newer entry.
    if (found != bindings_.end() && found->second.ts_ns < cutoff) bindings_.erase(found);
    binding_order_.pop_front();
  }
}

void EvidenceStore::AddThreadWindow(std::uint32_t tid, std::uint64_t start, std::uint64_t end,
                                    const std::vector<NetPiece>& net, Breakdown& out) const {
  // The thread's time as one partition of [start, end): streamed segments,
  // app.on_cpu between them. App pieces may be taken by network intervals.
  auto add = [&](std::uint64_t lo, std::uint64_t hi, abi::Cause cause) {
    if (hi <= lo) return;
    if (abi::CauseLayer(cause) == abi::Layer::kApp && !net.empty()) {
      OverlayNetwork(lo, hi, cause, net, out);
    } else {
      out.seconds[cause] += static_cast<double>(hi - lo) / 1e9;
    }
  };
  std::uint64_t covered = 0;
  std::uint64_t cursor = start;
  auto it = segments_.find(tid);
  if (it != segments_.end()) {
    const auto& segs = it->second;
    // Segments are ordered by end time: skip those that ended before `start`.
    auto first = std::lower_bound(segs.begin(), segs.end(), start,
                                  [](const Segment& s, std::uint64_t t) { return s.end_ns <= t; });
    for (auto s = first; s != segs.end(); ++s) {
      // A thread's segments do not overlap: ordered by end, they are ordered
      // by start too, so none after this one reaches into the span.
      if (s->start_ns >= end) break;
      const std::uint64_t lo = std::max(s->start_ns, start);
      const std::uint64_t hi = std::min(s->end_ns, end);
      if (hi <= lo || s->cause >= ISO_CAUSE_MAX) continue;
      if (lo > cursor) add(cursor, lo, ISO_CAUSE_APP_ON_CPU);
      add(std::max(lo, cursor), hi, s->cause);
      covered += hi - lo;
      cursor = std::max(cursor, hi);
    }
  }
  if (cursor < end) add(cursor, end, ISO_CAUSE_APP_ON_CPU);
  const std::uint64_t length = end - start;
  out.thread_seconds += static_cast<double>(std::max(length, covered)) / 1e9;
}

bool EvidenceStore::JoinProcesses(const std::vector<std::uint32_t>& tgids, const SpanQuery& span,
                                  SpanResult& r) const {
  std::vector<std::uint32_t> tids;
  for (std::uint32_t tgid : tgids) {
    auto threads = threads_of_.find(tgid);
    if (threads == threads_of_.end()) continue;
    tids.insert(tids.end(), threads->second.begin(), threads->second.end());
    if (r.tgid == 0) r.tgid = tgid;
  }
  if (tids.empty()) return false;
  // Which thread served the request is unknown: average the threads, and say
  // so through a lower confidence.
  Breakdown sum;
  for (std::uint32_t tid : tids) AddThreadWindow(tid, span.start_boot_ns, span.end_boot_ns, {}, sum);
  const double n = static_cast<double>(tids.size());
  for (auto& s : sum.seconds) s /= n;
  r.tids = std::move(tids);
  r.breakdown.seconds = sum.seconds;
  r.breakdown.thread_seconds = sum.thread_seconds / n;
  r.breakdown.threads = 1;
  r.verdict = ComputeVerdict(r.breakdown);
  r.verdict.confidence *= 0.5;
  if (auto cg = cgroups_of_.find(r.tgid); cg != cgroups_of_.end()) {
    r.cgroup_v2_id = cg->second.first;
    r.cgroup_v1_cpu_id = cg->second.second;
  }
  return true;
}

std::vector<std::uint32_t> EvidenceStore::ProcessesWhere(
    const std::function<bool(std::uint64_t, std::uint64_t)>& match) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::uint32_t> out;
  for (const auto& [tgid, cg] : cgroups_of_) {
    if (match(cg.first, cg.second)) out.push_back(tgid);
  }
  std::sort(out.begin(), out.end());
  return out;
}

SpanResult EvidenceStore::Join(const SpanQuery& span, const NetLookup& net) const {
  SpanResult r;
  if (span.end_boot_ns <= span.start_boot_ns) return r;
  r.breakdown.interval_s = static_cast<double>(span.end_boot_ns - span.start_boot_ns) / 1e9;
  std::optional<BindingRec> bound;
  // A served request's own calls: requests of the same trace that the serving
  // process sent during the span (their flows' network time is the span's too).
  std::vector<SocketTuple> calls;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const SpanId& key_id = span.outbound ? span.span_id : span.parent_span_id;
    auto found = bindings_.find(BindingKey(span.trace_id, key_id, span.outbound));
    if (found != bindings_.end()) bound = found->second;
    if (bound && !span.outbound && net) {
      const std::string prefix = BindingKey(span.trace_id, SpanId{}, true).substr(0, 1 + 16);
      for (auto it = bindings_.lower_bound(prefix);
           it != bindings_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
        const BindingRec& call = it->second;
        if (call.tgid == bound->tgid && call.ts_ns >= span.start_boot_ns &&
            call.ts_ns <= span.end_boot_ns) {
          calls.push_back(call.socket);
        }
      }
    }
  }
  if (bound) {
    // The network lookups run outside our lock (the network store has its own).
    std::vector<NetPiece> pieces;
    if (net) {
      pieces = net(bound->socket, span.start_boot_ns, span.end_boot_ns);
      for (const auto& socket : calls) {
        auto more = net(socket, span.start_boot_ns, span.end_boot_ns);
        pieces.insert(pieces.end(), more.begin(), more.end());
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    r.binding = Binding::kThread;
    r.tgid = bound->tgid;
    r.tids = {bound->tid};
    r.socket = bound->socket;
    r.cgroup_v2_id = bound->cgroup_v2_id;
    r.cgroup_v1_cpu_id = bound->cgroup_v1_cpu_id;
    AddThreadWindow(bound->tid, span.start_boot_ns, span.end_boot_ns, pieces, r.breakdown);
    r.breakdown.threads = 1;
    r.verdict = ComputeVerdict(r.breakdown);
    return r;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (span.resource_pid && JoinProcesses({*span.resource_pid}, span, r)) {
    r.binding = Binding::kProcess;
    return r;
  }
  if (!span.candidate_tgids.empty() && JoinProcesses(span.candidate_tgids, span, r)) {
    r.binding = span.candidate_binding;
    return r;
  }
  return SpanResult{.breakdown = {.interval_s = r.breakdown.interval_s}};
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
