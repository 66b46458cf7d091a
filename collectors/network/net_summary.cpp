#include "collectors/network/net_summary.hpp"

#include <algorithm>

namespace isoscope::network {

std::vector<Range> MergeIntervals(std::vector<Range> ranges) {
  std::erase_if(ranges, [](const Range& r) { return r.second <= r.first; });
  std::sort(ranges.begin(), ranges.end());
  std::vector<Range> out;
  for (const Range& r : ranges) {
    if (!out.empty() && r.first <= out.back().second) {
      out.back().second = std::max(out.back().second, r.second);
    } else {
      out.push_back(r);
    }
  }
  return out;
}

std::uint64_t UnionLength(std::vector<Range> ranges) {
  std::uint64_t total = 0;
  for (const Range& r : MergeIntervals(std::move(ranges))) total += r.second - r.first;
  return total;
}

void NetworkSummary::SetFlows(const std::vector<FlowKey>& flows) {
  flows_ = std::set<FlowKey>(flows.begin(), flows.end());
}

void NetworkSummary::AddFlow(const FlowKey& flow) { flows_.insert(flow); }

void NetworkSummary::Begin(std::uint64_t start_ns, std::uint64_t end_ns) {
  start_ns_ = start_ns;
  end_ns_ = end_ns;
  ranges_.clear();
  retransmits_ = 0;
  retransmits_spurious_ = 0;
  last_retrans_.clear();
  drops_.clear();
  records_ = 0;
  matched_ = 0;
}

void NetworkSummary::Add(const iso_rec_net& rec) {
  ++records_;
  if (rec.event == ISO_NET_EV_NONE || rec.event >= ISO_NET_EV_MAX || rec.start_ns > rec.hdr.ts_ns) {
    return;
  }
  const FlowKey flow = FlowFromNet(rec);
  if (!flow.Valid() || flows_.count(flow) == 0) return;
  const std::uint32_t slice = attributor_.Attribute(rec);
  --records_;  // counted again by the classified Add
  Add(flow, MakeInterval(rec, slice));
}

void NetworkSummary::Add(const FlowKey& flow, const NetInterval& interval) {
  ++records_;
  if (flows_.count(flow) == 0) return;
  if (interval.event == ISO_NET_EV_DROP) {
    if (interval.end_ns < start_ns_ || interval.end_ns >= end_ns_) return;
    ++matched_;
    ++drops_[interval.reason];
    if (old_data_reason_ != 0 && interval.reason == old_data_reason_)
      MarkSpurious(flow, interval.end_ns);
    return;
  }
  // A retransmission counts once, in the interval where it happened (its end).
  const bool is_retrans = interval.event == ISO_NET_EV_RETRANS;
  const bool retransmit = is_retrans && interval.end_ns >= start_ns_ && interval.end_ns < end_ns_;
  if (retransmit) ++retransmits_;
  if (retransmit && interval.spurious) ++retransmits_spurious_;
  const std::uint64_t start = std::max(interval.start_ns, start_ns_);
  const std::uint64_t end = std::min(interval.end_ns, end_ns_);
  if (end <= start || (is_retrans && interval.spurious)) {
    if (retransmit) ++matched_;
    return;
  }
  ++matched_;
  auto& ranges = ranges_[{flow, interval.cause}];
  ranges.emplace_back(start, end);
  if (is_retrans)
    last_retrans_[flow] = {interval.end_ns, interval.cause, ranges.size() - 1, retransmit, false};
}

void NetworkSummary::MarkSpurious(const FlowKey& flow, std::uint64_t drop_ns) {
  auto it = last_retrans_.find(flow);
  if (it == last_retrans_.end()) return;
  LastRetrans& r = it->second;
  if (r.spurious || drop_ns < r.end_ns || drop_ns - r.end_ns > NetEvidence::kSpuriousWindowNs)
    return;
  r.spurious = true;
  if (r.counted) ++retransmits_spurious_;
  if (r.index != kNoRange)
    ranges_[{flow, r.cause}][r.index] = {0, 0};  // empty: left out of the union
}

NetSummaryResult NetworkSummary::Summary() const {
  NetSummaryResult out;
  out.start_ns = start_ns_;
  out.end_ns = end_ns_;
  out.retransmits = retransmits_;
  out.retransmits_spurious = retransmits_spurious_;
  out.drops_by_reason = drops_;
  out.records = records_;
  out.matched = matched_;
  std::map<abi::Cause, std::uint64_t> ns_by_cause;
  for (const auto& [key, ranges] : ranges_) ns_by_cause[key.second] += UnionLength(ranges);
  std::uint64_t total_ns = 0;
  for (const auto& [cause, ns] : ns_by_cause) total_ns += ns;
  for (const auto& [cause, ns] : ns_by_cause) {
    if (ns == 0) continue;
    NetSummaryRow row;
    row.cause = cause;
    row.name = abi::CauseName(cause);
    row.seconds = static_cast<double>(ns) / 1e9;
    row.share = total_ns > 0 ? static_cast<double>(ns) / static_cast<double>(total_ns) : 0;
    out.rows.push_back(row);
  }
  std::stable_sort(
      out.rows.begin(), out.rows.end(),
      [](const NetSummaryRow& a, const NetSummaryRow& b) { return a.seconds > b.seconds; });
  out.total_seconds = static_cast<double>(total_ns) / 1e9;
  return out;
}

}  // namespace isoscope::network
