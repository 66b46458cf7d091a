#include "collectors/network/net_evidence.hpp"

#include <cstring>

namespace isoscope::network {

NetInterval MakeInterval(const iso_rec_net& rec, std::uint32_t slice) {
  NetInterval out;
  out.start_ns = rec.event == ISO_NET_EV_DROP ? rec.hdr.ts_ns : rec.start_ns;
  out.end_ns = rec.hdr.ts_ns;
  out.cause = CauseOf(rec, slice);
  out.event = rec.event;
  out.reason = rec.reason;
  out.bytes = rec.bytes;
  out.sock = rec.sock;
  return out;
}

void NetEvidence::Add(const iso_rec_net& rec) {
  std::lock_guard<std::mutex> lock(mu_);
  if (rec.event == ISO_NET_EV_NONE || rec.event >= ISO_NET_EV_MAX || rec.start_ns > rec.hdr.ts_ns) {
    ++stats_.invalid;
    return;
  }
  const FlowKey flow = FlowFromNet(rec);
  const std::uint32_t slice = attributor_.Attribute(rec);
  if (!flow.Valid()) {
    ++stats_.no_flow;
    return;
  }
  if (rec.event == ISO_NET_EV_RETRANS && slice != ISO_SLICE_REMOTE) ++stats_.retrans_after_drop;
  if (limits_.max_intervals == 0) {
    ++stats_.evicted;
    return;
  }
  const NetInterval interval = MakeInterval(rec, slice);
  const bool drop = rec.event == ISO_NET_EV_DROP;
  PerFlow& per_flow = flows_[flow];
  if (drop && old_data_reason_ != 0 && rec.reason == old_data_reason_) {
    // The receiver already had this data: the latest retransmission of the flow was needless.
    for (auto r = per_flow.intervals.rbegin(); r != per_flow.intervals.rend(); ++r) {
      if (r->event != ISO_NET_EV_RETRANS) continue;
      if (!r->spurious && r->end_ns <= interval.end_ns &&
          interval.end_ns - r->end_ns <= kSpuriousWindowNs) {
        r->spurious = true;
        ++stats_.retrans_spurious;
      }
      break;
    }
  }
  (drop ? per_flow.drops : per_flow.intervals).push_back(interval);
  order_.push_back({interval.end_ns, flow, drop});
  ++stats_.added;
  ++stats_.by_event[rec.event];
  while (order_.size() > limits_.max_intervals) {
    PopOldest();
    ++stats_.evicted;
  }
}

void NetEvidence::SetOldDataReason(std::uint16_t reason) {
  std::lock_guard<std::mutex> lock(mu_);
  old_data_reason_ = reason;
}

void NetEvidence::PopOldest() {
  const Entry& oldest = order_.front();
  auto it = flows_.find(oldest.flow);
  if (it != flows_.end()) {
    auto& items = oldest.drop ? it->second.drops : it->second.intervals;
    if (!items.empty()) items.pop_front();
    if (it->second.drops.empty() && it->second.intervals.empty()) flows_.erase(it);
  }
  order_.pop_front();
}

void NetEvidence::Expire(std::uint64_t now_ns) {
  if (now_ns < limits_.window_ns) return;
  const std::uint64_t cutoff = now_ns - limits_.window_ns;
  std::lock_guard<std::mutex> lock(mu_);
  while (!order_.empty() && order_.front().end_ns < cutoff) {
    PopOldest();
    ++stats_.expired;
  }
}

std::vector<NetInterval> NetEvidence::Intervals(const FlowKey& flow, std::uint64_t start_ns,
                                                std::uint64_t end_ns) const {
  std::vector<NetInterval> out;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = flows_.find(flow);
  if (it == flows_.end()) return out;
  for (const NetInterval& i : it->second.intervals) {
    if (i.start_ns < end_ns && i.end_ns > start_ns && !i.spurious) out.push_back(i);
  }
  return out;
}

std::vector<NetInterval> NetEvidence::Drops(const FlowKey& flow, std::uint64_t start_ns,
                                            std::uint64_t end_ns) const {
  std::vector<NetInterval> out;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = flows_.find(flow);
  if (it == flows_.end()) return out;
  for (const NetInterval& d : it->second.drops) {
    if (d.end_ns >= start_ns && d.end_ns < end_ns) out.push_back(d);
  }
  return out;
}

NetEvidenceStats NetEvidence::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::size_t NetEvidence::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return order_.size();
}

void NetEvidenceSink::OnRecord(const iso_rec_hdr& hdr, std::span<const std::byte> bytes) {
  // Sources hand over checked records (abi::ValidateRecord): the size test is only a guard.
  if (hdr.kind != ISO_REC_NET || bytes.size() < sizeof(iso_rec_net)) return;
  iso_rec_net rec;
  std::memcpy(&rec, bytes.data(), sizeof(rec));
  store_.Add(rec);
}

}  // namespace isoscope::network
