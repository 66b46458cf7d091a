// Network evidence kept for joins (docs/network.md, "Joining a request"): the intervals of
// ISO_REC_NET records by flow, classified into network.<slice>.<mechanism> causes when added.
//
// Bounded in time and memory like correlator::EvidenceStore: records older than `window_ns` before
// Expire(now) are forgotten (counted in `expired`), and at most `max_intervals` intervals and drops
// are kept in all, the oldest forgotten first (counted in `evicted`, a loss). Expiry and eviction
// go in arrival order, which the ring buffer keeps close to time order.
//
// Thread-safe: Add/Expire run on the agent's drain thread while joins query.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

#include "collectors/network/flow.hpp"
#include "collectors/network/slices.hpp"
#include "collectors/source/event_source.hpp"
#include "isoscope/abi.hpp"

namespace isoscope::network {

// One classified record: [start_ns, end_ns) on the boot clock; start_ns == end_ns for a drop.
struct NetInterval {
  std::uint64_t start_ns = 0;
  std::uint64_t end_ns = 0;
  abi::Cause cause = 0;      // network.<slice>.<mechanism>
  std::uint8_t event = 0;    // enum iso_net_event
  std::uint16_t reason = 0;  // ISO_NET_RETRANS_* or the kernel's drop reason
  std::uint32_t bytes = 0;
  std::uint64_t sock = 0;  // the socket of a socket event (RCVQ, RETRANS); 0 for packets
  // A retransmission the receiver showed to be needless (it dropped the copy as old data): the
  // original was not lost, so its wait is not a protocol delay. Kept (for the bounds), not joined.
  bool spurious = false;
};

// The interval of one record in `slice` (no flow, no store).
NetInterval MakeInterval(const iso_rec_net& rec, std::uint32_t slice);

struct NetEvidenceStats {
  std::uint64_t added = 0;    // intervals and drops stored
  std::uint64_t evicted = 0;  // forgotten early to respect max_intervals (a loss)
  std::uint64_t expired = 0;  // forgotten after the window
  std::uint64_t no_flow = 0;  // records without an IP flow (not stored, cannot be joined)
  std::uint64_t invalid = 0;  // records with an unknown event or ending before they start
  std::uint64_t retrans_after_drop = 0;                  // retransmissions blamed on a drop's slice
  std::uint64_t retrans_spurious = 0;  // retransmissions the receiver dropped as old data
  std::array<std::uint64_t, ISO_NET_EV_MAX> by_event{};  // stored, by enum iso_net_event
};

class NetEvidence {
 public:
  struct Limits {
    std::uint64_t window_ns = 60ull * 1000000000ull;
    std::size_t max_intervals = 1u << 18;  // intervals and drops, all flows together
    RetransAttributor::Limits retrans;
  };
  NetEvidence() : NetEvidence(Limits{}) {}
  explicit NetEvidence(Limits limits) : limits_(limits), attributor_(limits.retrans) {}

  // Classifies (SliceOf, RetransAttributor) and stores one record.
  void Add(const iso_rec_net& rec);
  // The kernel's drop reason for "data already received" (SKB_DROP_REASON_TCP_OLD_DATA, whose
  // value differs between kernels): such a drop within kSpuriousWindowNs after a retransmission
  // of the same flow marks that retransmission spurious. 0: unknown, nothing is marked.
  void SetOldDataReason(std::uint16_t reason);
  static constexpr std::uint64_t kSpuriousWindowNs = 1000000000ull;
  // Forgets evidence that ended before now - window.
  void Expire(std::uint64_t now_ns);

  // Intervals of `flow` overlapping [start_ns, end_ns), drops excluded, in arrival order.
  std::vector<NetInterval> Intervals(const FlowKey& flow, std::uint64_t start_ns,
                                     std::uint64_t end_ns) const;
  // Drops of `flow` at a time in [start_ns, end_ns), in arrival order.
  std::vector<NetInterval> Drops(const FlowKey& flow, std::uint64_t start_ns,
                                 std::uint64_t end_ns) const;

  NetEvidenceStats Stats() const;
  std::size_t size() const;  // intervals and drops kept

 private:
  struct PerFlow {
    std::deque<NetInterval> intervals;
    std::deque<NetInterval> drops;
  };
  struct Entry {
    std::uint64_t end_ns;
    FlowKey flow;
    bool drop;
  };
  // Forgets the oldest entry. Requires mu_.
  void PopOldest();

  const Limits limits_;
  mutable std::mutex mu_;
  RetransAttributor attributor_;                             // guarded by mu_
  std::unordered_map<FlowKey, PerFlow, FlowKeyHash> flows_;  // guarded by mu_
  std::deque<Entry> order_;  // every stored item in arrival order; guarded by mu_
  std::uint16_t old_data_reason_ = 0;  // guarded by mu_
  NetEvidenceStats stats_;   // guarded by mu_
};

// Feeds ISO_REC_NET records from an event source into a store.
class NetEvidenceSink : public source::RecordSink {
 public:
  explicit NetEvidenceSink(NetEvidence& store) : store_(store) {}
  void OnRecord(const iso_rec_hdr& hdr, std::span<const std::byte> bytes) override;

 private:
  NetEvidence& store_;
};

}  // namespace isoscope::network
