#include "collectors/network/slices.hpp"

#include <array>
#include <cstring>

namespace isoscope::network {
namespace {

constexpr std::array<std::string_view, ISO_SLICE_MAX> kSliceNames = {"sandbox", "pod", "node",
                                                                     "virtio", "remote"};
constexpr std::array<std::string_view, ISO_NET_MECHANISM_MAX> kMechanismNames = {
    "queue", "scheduling", "protocol"};
constexpr std::array<std::string_view, ISO_NET_EV_MAX> kEventNames = {
    "none", "qdisc", "backlog", "rcvq", "retrans", "drop", "devq", "zwnd"};

bool HasDevice(const iso_rec_net& rec) {
  return rec.ifindex != 0 || rec.dev_kind[0] != '\0' || rec.dev_name[0] != '\0';
}

bool IsVeth(const iso_rec_net& rec) {
  // dev_kind is not necessarily NUL-terminated when the kind fills all 8 bytes.
  return std::strncmp(rec.dev_kind, "veth", sizeof(rec.dev_kind)) == 0;
}

bool HostNetns(const iso_rec_net& rec) { return (rec.flags & ISO_NET_F_HOST_NETNS) != 0; }

}  // namespace

std::uint32_t SliceOf(const iso_rec_net& rec) {
  if (rec.event == ISO_NET_EV_RETRANS) return ISO_SLICE_REMOTE;
  if (rec.event == ISO_NET_EV_DEVQ) return ISO_SLICE_VIRTIO;
  if (rec.event == ISO_NET_EV_ZWND) return ISO_SLICE_REMOTE;
  if (HasDevice(rec) && (rec.flags & ISO_NET_F_SOCK) == 0) {
    if (IsVeth(rec)) return ISO_SLICE_POD;
    return HostNetns(rec) ? ISO_SLICE_NODE : ISO_SLICE_POD;
  }
  return HostNetns(rec) ? ISO_SLICE_NODE : ISO_SLICE_POD;
}

std::uint32_t MechanismOf(const iso_rec_net& rec) {
  switch (rec.event) {
    case ISO_NET_EV_QDISC:
    case ISO_NET_EV_RCVQ:
    case ISO_NET_EV_DEVQ:
      return ISO_NET_QUEUE;
    case ISO_NET_EV_BACKLOG:
      return ISO_NET_SCHEDULING;
    case ISO_NET_EV_RETRANS:
    case ISO_NET_EV_DROP:
    case ISO_NET_EV_ZWND:
      return ISO_NET_PROTOCOL;
    default:
      return rec.mech < ISO_NET_MECHANISM_MAX ? rec.mech : std::uint32_t{ISO_NET_PROTOCOL};
  }
}

abi::Cause CauseOf(const iso_rec_net& rec, std::uint32_t slice) {
  if (slice >= ISO_SLICE_MAX) slice = ISO_SLICE_REMOTE;
  return abi::NetworkCause(slice, MechanismOf(rec));
}

std::string_view SliceName(std::uint32_t slice) {
  return slice < kSliceNames.size() ? kSliceNames[slice] : std::string_view();
}

std::string_view MechanismName(std::uint32_t mechanism) {
  return mechanism < kMechanismNames.size() ? kMechanismNames[mechanism] : std::string_view();
}

std::string_view EventName(std::uint8_t event) {
  return event < kEventNames.size() ? kEventNames[event] : std::string_view();
}

std::uint32_t CauseSliceOf(abi::Cause cause) {
  if (cause < ISO_CAUSE_NETWORK_BASE || cause >= ISO_CAUSE_MAX) return ISO_SLICE_MAX;
  return (cause - ISO_CAUSE_NETWORK_BASE) / ISO_NET_MECHANISM_MAX;
}

std::uint32_t CauseMechanismOf(abi::Cause cause) {
  if (cause < ISO_CAUSE_NETWORK_BASE || cause >= ISO_CAUSE_MAX) return ISO_NET_MECHANISM_MAX;
  return (cause - ISO_CAUSE_NETWORK_BASE) % ISO_NET_MECHANISM_MAX;
}

void RetransAttributor::Forget() {
  while (!order_.empty()) {
    const auto& [ts_ns, flow] = order_.front();
    const bool too_many = order_.size() > limits_.max_drops;
    const bool too_old = ts_ns + limits_.window_ns < newest_ns_;
    if (!too_many && !too_old) break;
    if (too_many && !too_old) ++evicted_;
    auto it = drops_.find(flow);
    if (it != drops_.end()) {
      it->second.pop_front();
      if (it->second.empty()) drops_.erase(it);
    }
    order_.pop_front();
  }
}

void RetransAttributor::OnDrop(const FlowKey& flow, std::uint64_t ts_ns, std::uint32_t slice) {
  if (!flow.Valid() || limits_.max_drops == 0) return;
  if (ts_ns > newest_ns_) newest_ns_ = ts_ns;
  drops_[flow].push_back({ts_ns, slice});
  order_.emplace_back(ts_ns, flow);
  Forget();
}

std::uint32_t RetransAttributor::SliceForRetrans(const FlowKey& flow, std::uint64_t ts_ns) const {
  auto it = drops_.find(flow);
  if (it == drops_.end()) return ISO_SLICE_REMOTE;
  const Drop* best = nullptr;
  for (const Drop& d : it->second) {
    if (d.ts_ns > ts_ns || ts_ns - d.ts_ns > limits_.window_ns) continue;
    if (best == nullptr || d.ts_ns >= best->ts_ns) best = &d;
  }
  return best != nullptr ? best->slice : std::uint32_t{ISO_SLICE_REMOTE};
}

std::uint32_t RetransAttributor::Attribute(const iso_rec_net& rec) {
  if (rec.event == ISO_NET_EV_RETRANS) return SliceForRetrans(FlowFromNet(rec), rec.hdr.ts_ns);
  const std::uint32_t slice = SliceOf(rec);
  if (rec.event == ISO_NET_EV_DROP) OnDrop(FlowFromNet(rec), rec.hdr.ts_ns, slice);
  return slice;
}

}  // namespace isoscope::network
