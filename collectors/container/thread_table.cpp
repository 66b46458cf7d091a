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
  d.vcpu = (t.flags & ISO_TF_VCPU) != 0;
  // Deltas per cause against the last values seen. Two things make a cause's cumulative value
  // go down between snapshots: BPF splits an open segment after the fact (a block wait is
  // retagged io_throttle / virtio_blk when its request completes, a segment's stolen part
  // becomes hypervisor.steal, a throttle is split at the unthrottle), and the map value is
  // read while BPF updates it on another CPU (a torn read). The thread's total only grows, so
  // what a cause lost is taken back from what this interval's causes gained, the causes that
  // splits move time to first, and any rest is carried as a debt to the next interval: each
  // interval's total stays the thread's real wall time, and sums over intervals telescope.
  std::array<std::uint64_t, ISO_THREAD_CAUSES> gain{};
  std::uint64_t lost = seen.debt;
  for (std::size_t c = 0; c < now.size(); ++c) {
    if (now[c] >= seen.effective[c]) {
      gain[c] = now[c] - seen.effective[c];
    } else {
      lost += seen.effective[c] - now[c];
    }
    seen.effective[c] = now[c];
  }
  constexpr std::array<std::size_t, 5> kSplitTargets = {
      ISO_CAUSE_CONTAINER_IO_THROTTLE, ISO_CAUSE_PARAVIRT_VIRTIO_BLK, ISO_CAUSE_HYPERVISOR_STEAL,
      ISO_CAUSE_CONTAINER_RUNQUEUE, ISO_CAUSE_APP_BLOCKED_IO};
  auto take = [&](std::size_t c) {
    const std::uint64_t t = std::min(lost, gain[c]);
    gain[c] -= t;
    lost -= t;
  };
  for (std::size_t c : kSplitTargets) take(c);
  for (std::size_t c = 0; c < gain.size() && lost > 0; ++c) take(c);
  seen.debt = lost;
  d.ns = gain;
  std::uint64_t halted = t.halted_ns;
  if (!exited && t.seg_cause == ISO_CAUSE_APP_BLOCKED_OTHER && t.vcpu_state == ISO_VCPU_EXIT &&
      hdr.ts_ns > t.seg_start_ns) {
    halted += hdr.ts_ns - t.seg_start_ns;  // asleep in an exit right now
  }
  if (halted > seen.halted) {
    d.halted_ns = std::min(halted - seen.halted, d.ns[ISO_CAUSE_APP_BLOCKED_OTHER]);
    seen.halted = halted;
  }
  seen.last_snapshot_ns = hdr.ts_ns;
  if (d.total_ns() > 0 || exited) pending_.threads.push_back(std::move(d));
  if (exited) last_.erase(hdr.tid);
}

namespace {
// Delta of a cumulative counter against its high-water mark (see Account).
std::uint64_t Advance(std::uint64_t now, std::uint64_t& seen) {
  if (now <= seen) return 0;
  const std::uint64_t d = now - seen;
  seen = now;
  return d;
}

template <typename Map>
void ForgetOlder(Map& m, std::uint64_t snapshot_ns) {
  for (auto it = m.begin(); it != m.end();) {
    it = it->second.last_snapshot_ns < snapshot_ns ? m.erase(it) : std::next(it);
  }
}
}  // namespace

void ThreadTable::AccountExits(const iso_rec_kvm& rec) {
  const std::uint64_t key = (static_cast<std::uint64_t>(rec.hdr.tid) << 32) |
                            (static_cast<std::uint64_t>(rec.isa & 0xffu) << 24) |
                            (rec.reason & 0xffffffu);
  SeenCounter& seen = exits_[key];
  seen.last_snapshot_ns = rec.hdr.ts_ns;
  VmExitDelta d;
  d.tid = rec.hdr.tid;
  d.tgid = rec.hdr.tgid;
  d.cgroup_v2_id = rec.hdr.cgroup_v2_id;
  d.cgroup_v1_cpu_id = rec.hdr.cgroup_v1_cpu_id;
  d.isa = rec.isa;
  d.reason = rec.reason;
  d.count = Advance(rec.count, seen.a);
  d.ns = Advance(rec.ns, seen.b);
  if (d.count > 0 || d.ns > 0) pending_.vm_exits.push_back(d);
}

void ThreadTable::AccountNode(const iso_rec_node& rec) {
  SeenCounter& seen = cpus_[rec.hdr.tid];
  const bool known = seen.last_snapshot_ns != 0;
  seen.last_snapshot_ns = rec.hdr.ts_ns;
  const std::uint64_t idle = Advance(rec.idle_steal_ns, seen.a);
  const std::uint64_t kernel = Advance(rec.kernel_steal_ns, seen.b);
  pending_.node_steal.measured = true;
  if (!known) return;  // a CPU's first record is its baseline
  pending_.node_steal.idle_ns += idle;
  pending_.node_steal.kernel_ns += kernel;
  pending_.node_steal.kernel_ns_per_cpu[rec.hdr.tid] += kernel;
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
    case ISO_REC_KVM: {
      iso_rec_kvm rec;
      std::memcpy(&rec, bytes.data(), sizeof(rec));
      AccountExits(rec);
      break;
    }
    case ISO_REC_NODE: {
      iso_rec_node rec;
      std::memcpy(&rec, bytes.data(), sizeof(rec));
      AccountNode(rec);
      break;
    }
    case ISO_REC_SNAPSHOT: {
      // Threads that were not in this snapshot and did not exit are gone
      // from the map (evicted): forget them so the table stays bounded.
      ForgetOlder(last_, hdr.ts_ns);
      ForgetOlder(exits_, hdr.ts_ns);
      ForgetOlder(cpus_, hdr.ts_ns);
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
