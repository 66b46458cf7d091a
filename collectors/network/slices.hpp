// The slice of a network record (docs/network.md, "Picking the slice"): BPF reports facts (device,
// netns, socket), the slice is this rule, applied in user space.
//
//   packet events (QDISC, BACKLOG, DROP with a device):
//     device of kind "veth"                    -> pod
//     any other device in the host netns       -> node
//     any other device in another netns (lo)   -> pod
//   socket events (RCVQ) and drops without a device:
//     host netns (ISO_NET_F_HOST_NETNS)        -> node, else pod
//   DEVQ (a paravirtual NIC's ring)            -> virtio
//   ZWND (the peer's zero window)              -> remote: waiting on the peer's reader (when that
//                                                 reader is on this node, its own RCVQ says why)
//   RETRANS: the slice of the latest drop on the same flow before it on this node, within a window
//            (RetransAttributor), else remote. SliceOf alone returns remote.
//
// A qdisc on the virtio NIC is still the node's (the node's kernel queues there); only the wait in
// the device's own ring, for the host to take the packet, is the virtio slice.
//
// The mechanism is fixed by the event: QDISC/RCVQ/DEVQ queue, BACKLOG scheduling,
// RETRANS/DROP/ZWND protocol.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "collectors/network/flow.hpp"
#include "isoscope/abi.hpp"

namespace isoscope::network {

// enum iso_net_slice of a record; RETRANS is ISO_SLICE_REMOTE (see RetransAttributor).
std::uint32_t SliceOf(const iso_rec_net& rec);
// enum iso_net_mechanism fixed by the event; rec.mech for an unknown event (clamped to a valid
// value).
std::uint32_t MechanismOf(const iso_rec_net& rec);
// The abi cause network.<slice>.<mechanism> of the record in `slice`.
abi::Cause CauseOf(const iso_rec_net& rec, std::uint32_t slice);

// "pod", "queue", "qdisc"; empty for an unknown value.
std::string_view SliceName(std::uint32_t slice);
std::string_view MechanismName(std::uint32_t mechanism);
std::string_view EventName(std::uint8_t event);
// Slice and mechanism of a network cause; ISO_SLICE_MAX / ISO_NET_MECHANISM_MAX for a cause
// outside the network layer.
std::uint32_t CauseSliceOf(abi::Cause cause);
std::uint32_t CauseMechanismOf(abi::Cause cause);

// Remembers recent drops per flow so that a retransmission is blamed on the slice that dropped its
// packet. Bounded: drops older than `window_ns` before the newest seen are forgotten, and at most
// `max_drops` are kept (oldest forgotten first, counted in Evicted()). Not thread-safe.
class RetransAttributor {
 public:
  struct Limits {
    std::uint64_t window_ns = 3ull * 1000000000ull;  // on the record clock (boot time)
    std::size_t max_drops = 1u << 14;
  };
  RetransAttributor() : RetransAttributor(Limits{}) {}
  explicit RetransAttributor(Limits limits) : limits_(limits) {}

  // Remembers a drop of `flow` at `ts_ns` in `slice`.
  void OnDrop(const FlowKey& flow, std::uint64_t ts_ns, std::uint32_t slice);
  // The slice of the latest remembered drop of `flow` in [ts_ns - window, ts_ns], else
  // ISO_SLICE_REMOTE.
  std::uint32_t SliceForRetrans(const FlowKey& flow, std::uint64_t ts_ns) const;
  // The slice of any record: remembers DROPs, attributes RETRANS, SliceOf for the rest.
  std::uint32_t Attribute(const iso_rec_net& rec);

  std::size_t size() const { return order_.size(); }  // drops remembered
  std::uint64_t Evicted() const { return evicted_; }  // forgotten early to respect max_drops

 private:
  struct Drop {
    std::uint64_t ts_ns;
    std::uint32_t slice;
  };
  void Forget();

  Limits limits_;
  std::uint64_t newest_ns_ = 0;
  // Per flow in arrival order; order_ lists every remembered drop in the same arrival order, so
  // the front of order_ is always the front of its flow's deque.
  std::unordered_map<FlowKey, std::deque<Drop>, FlowKeyHash> drops_;
  std::deque<std::pair<std::uint64_t, FlowKey>> order_;
  std::uint64_t evicted_ = 0;
};

}  // namespace isoscope::network
