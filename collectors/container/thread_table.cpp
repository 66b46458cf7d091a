#include "collectors/container/thread_table.hpp"

#include <algorithm>
#include <cstring>

namespace isoscope::container {

std::uint64_t ThreadDelta::total_ns() const {
  std::uint64_t sum = 0;
  for (auto v : ns) sum += v;
  return sum;
}

std::array<std::uint64_t, ISO_THREAD_CAUSES> ThreadTable::Effective(const iso_thread_totals& t,
                                                                    std::uint64_t at) {
  std::array<std::uint64_t, ISO_THREAD_CAUSES> out{};
  std::copy(std::begin(t.cause_ns), std::end(t.cause_ns), out.begin());
  if (t.seg_cause < ISO_THREAD_CAUSES && at > t.seg_start_ns) out[t.seg_cause] += at - t.seg_start_ns;
  return out;
}

void ThreadTable::Account(const iso_rec_hdr& hdr, const iso_thread_totals& t, bool exited) {
  // Exit records are closed (no open segment); snapshots include the open
  // segment up to the snapshot time.
  const auto now = Effective(t, exited ? 0 : hdr.ts_ns);
  Seen& seen = last_[hdr.tid];
  ThreadDelta d;
  d.tid = hdr.tid;
  d.tgid = hdr.tgid;
  d.cgroup_v2_id = t.cgroup_v2_id;
  d.cgroup_v1_cpu_id = t.cgroup_v1_cpu_id;
  d.comm.assign(t.comm, strnlen(t.comm, sizeof(t.comm)));
  d.exited = exited;
  // The map value is read while BPF may update it on another CPU, so a
  // snapshot can run ahead of a later one for a moment. Deltas are taken
  // against a per-cause high-water mark: never negative, and the sum over
  // intervals still telescopes to the true total.
  for (std::size_t c = 0; c < now.size(); ++c) {
    if (now[c] > seen.effective[c]) {
      d.ns[c] = now[c] - seen.effective[c];
      seen.effective[c] = now[c];
    }
  }
  seen.last_snapshot_ns = hdr.ts_ns;
  if (d.total_ns() > 0 || exited) pending_.threads.push_back(std::move(d));
  if (exited) last_.erase(hdr.tid);
}

void ThreadTable::OnRecord(const iso_rec_hdr& hdr, std::span<const std::byte> bytes) {
  switch (hdr.kind) {
    case ISO_REC_THREAD_TOTALS:
    case ISO_REC_THREAD_EXIT: {
      iso_rec_thread_totals rec;
      std::memcpy(&rec, bytes.data(), sizeof(rec));
      Account(hdr, rec.t, hdr.kind == ISO_REC_THREAD_EXIT);
      break;
    }
    case ISO_REC_DELAY: {
      iso_rec_delay rec;
      std::memcpy(&rec, bytes.data(), sizeof(rec));
      pending_.delays.push_back(rec);
      break;
    }
    case ISO_REC_SNAPSHOT: {
      // Threads that were not in this snapshot and did not exit are gone
      // from the map (evicted): forget them so the table stays bounded.
      for (auto it = last_.begin(); it != last_.end();) {
        it = it->second.last_snapshot_ns < hdr.ts_ns ? last_.erase(it) : std::next(it);
      }
      if (started_) {
        pending_.start_ns = last_snapshot_ns_;
        pending_.end_ns = hdr.ts_ns;
        on_interval_(pending_);
      }
      // The first snapshot is the baseline: whatever it carries happened
      // before the first interval and only sets the high-water marks.
      started_ = true;
      last_snapshot_ns_ = hdr.ts_ns;
      pending_ = IntervalSample{};
      break;
    }
    default:
      break;
  }
}

}  // namespace isoscope::container
