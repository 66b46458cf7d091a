// The network section of `isoscope trace` (docs/network.md, "Per target"): for the target's flows
// over one interval, seconds per network cause, each row's share of the target's network seconds,
// retransmissions and drops by reason.
//
// Seconds of one cause on one flow are the length of the union of its intervals (clipped to the
// interval), so packets of one flow queued in parallel are not counted twice; different flows and
// different causes add up.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "collectors/network/flow.hpp"
#include "collectors/network/net_evidence.hpp"
#include "collectors/network/slices.hpp"
#include "isoscope/abi.hpp"

namespace isoscope::network {

using Range = std::pair<std::uint64_t, std::uint64_t>;  // [first, second)

// The union of `ranges` as sorted, disjoint, non-empty ranges (touching ranges are joined;
// empty ones dropped).
std::vector<Range> MergeIntervals(std::vector<Range> ranges);
// Total length of the union.
std::uint64_t UnionLength(std::vector<Range> ranges);

struct NetSummaryRow {
  abi::Cause cause = 0;
  std::string_view name;  // "network.pod.queue"
  double seconds = 0;
  double share = 0;  // of total_seconds, 0..1
};

struct NetSummaryResult {
  std::uint64_t start_ns = 0;
  std::uint64_t end_ns = 0;
  std::vector<NetSummaryRow> rows;  // by seconds, largest first; causes with time only
  double total_seconds = 0;         // sum of the rows
  std::uint64_t retransmits = 0;
  // Of those, the ones the receiver (on this node) dropped as data it already had: their wait is
  // not in the rows (SetOldDataReason).
  std::uint64_t retransmits_spurious = 0;
  std::map<std::uint16_t, std::uint64_t> drops_by_reason;  // the kernel's skb_drop_reason values
  std::uint64_t records = 0;                               // records offered
  std::uint64_t matched = 0;                               // records of the target's flows used
};

class NetworkSummary {
 public:
  NetworkSummary() = default;
  explicit NetworkSummary(RetransAttributor::Limits retrans) : attributor_(retrans) {}

  // The target's flows (replaces the previous set; socket_table.hpp reads them each interval).
  void SetFlows(const std::vector<FlowKey>& flows);
  void AddFlow(const FlowKey& flow);
  bool HasFlow(const FlowKey& flow) const { return flows_.count(flow) != 0; }
  // Starts an interval [start_ns, end_ns): forgets the previous interval's sums, keeps the flows
  // and the remembered drops (a drop late in one interval explains a retransmission early in the
  // next).
  void Begin(std::uint64_t start_ns, std::uint64_t end_ns);

  // A raw record: classified here (own RetransAttributor), used when its flow is a target flow.
  void Add(const iso_rec_net& rec);
  // An already classified interval (e.g. from NetEvidence::Intervals/Drops) of `flow`.
  void Add(const FlowKey& flow, const NetInterval& interval);

  NetSummaryResult Summary() const;

  // The kernel's value of SKB_DROP_REASON_TCP_OLD_DATA (0: unknown). A drop of a target flow with
  // that reason within NetEvidence::kSpuriousWindowNs after the flow's latest retransmission of
  // the same interval makes that retransmission spurious: counted in retransmits_spurious, its
  // wait taken out of the rows. An interval already marked spurious (NetEvidence) counts so too.
  void SetOldDataReason(std::uint16_t reason) { old_data_reason_ = reason; }

 private:
  struct LastRetrans {
    std::uint64_t end_ns = 0;
    abi::Cause cause = 0;
    std::size_t index = kNoRange;  // in ranges_[{flow, cause}]
    bool counted = false;          // counted in retransmits_ (ended in this interval)
    bool spurious = false;
  };
  static constexpr std::size_t kNoRange = static_cast<std::size_t>(-1);
  void MarkSpurious(const FlowKey& flow, std::uint64_t drop_ns);

  std::set<FlowKey> flows_;
  RetransAttributor attributor_;
  std::uint64_t start_ns_ = 0;
  std::uint64_t end_ns_ = 0;
  std::map<std::pair<FlowKey, abi::Cause>, std::vector<Range>> ranges_;
  std::uint64_t retransmits_ = 0;
  std::uint64_t retransmits_spurious_ = 0;
  std::uint16_t old_data_reason_ = 0;
  std::map<FlowKey, LastRetrans> last_retrans_;  // this interval's latest per flow
  std::map<std::uint16_t, std::uint64_t> drops_;
  std::uint64_t records_ = 0;
  std::uint64_t matched_ = 0;
};

}  // namespace isoscope::network
