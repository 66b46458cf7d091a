#include "correlator/net_join.hpp"

#include <cstring>

#include <fmt/format.h>

#include "collectors/network/socket_table.hpp"

namespace isoscope::correlator {

correlator::NetLookup MakeNetLookup(const network::NetEvidence& evidence) {
  return [&evidence](const correlator::SocketTuple& s, std::uint64_t start, std::uint64_t end) {
    const network::FlowKey flow =
        network::FlowFromTuple(s.family, s.local.data(), s.local_port, s.peer.data(), s.peer_port);
    std::vector<correlator::NetPiece> pieces;
    if (!flow.Valid()) return pieces;
    for (const auto& i : evidence.Intervals(flow, start, end)) {
      // A receive-queue wait is the reading socket's: data waited for that
      // end's application (busy, throttled or slow to read), which explains
      // its own span, not the peer's, whose request merely waited for it.
      if (i.event == ISO_NET_EV_RCVQ && s.sock != 0 && i.sock != s.sock) continue;
      pieces.push_back({i.start_ns, i.end_ns, i.cause, i.event == ISO_NET_EV_RCVQ});
    }
    return pieces;
  };
}

std::uint16_t DropReasonValue(const std::vector<std::string>& names, std::string_view name) {
  for (std::size_t i = 0; i < names.size() && i <= 0xffff; ++i) {
    if (names[i] == name) return static_cast<std::uint16_t>(i);
  }
  return 0;
}

std::string HexId(std::span<const std::uint8_t> id) {
  std::string out;
  out.reserve(id.size() * 2);
  for (std::uint8_t b : id) out += fmt::format("{:02x}", b);
  return out;
}

void TargetNetwork::OnRecord(const iso_rec_hdr& hdr, std::span<const std::byte> bytes) {
  if (hdr.kind == ISO_REC_TRACEPARENT) {
    if (!filter_.Matches(hdr.tgid, hdr.cgroup_v2_id, hdr.cgroup_v1_cpu_id)) return;
    iso_rec_traceparent rec;
    std::memcpy(&rec, bytes.data(), sizeof(rec));
    const auto flow = network::FlowFromTraceparent(rec);
    if (flow.Valid()) learned_.push_back(flow);
    return;
  }
  if (hdr.kind != ISO_REC_NET) return;
  iso_rec_net rec;
  std::memcpy(&rec, bytes.data(), sizeof(rec));
  if ((rec.flags & ISO_NET_F_TASK) &&
      filter_.Matches(hdr.tgid, hdr.cgroup_v2_id, hdr.cgroup_v1_cpu_id)) {
    const auto flow = network::FlowFromNet(rec);
    if (flow.Valid()) learned_.push_back(flow);
  }
  if (pending_.size() >= kMaxPending) {
    ++overflow_;
    return;
  }
  pending_.push_back(rec);
}

correlator::NetworkSection TargetNetwork::Close(std::uint64_t start_ns, std::uint64_t end_ns,
                                                const std::vector<int>& pids,
                                                const std::vector<std::string>& drop_names) {
  std::vector<network::FlowKey> flows = learned_;
  if (!pids.empty()) {
    // A process that exited meanwhile is not an error here: its flows were learned or are gone.
    for (int pid : pids) {
      if (auto tcp = network::TcpFlowsOfPids({pid}))
        flows.insert(flows.end(), tcp->begin(), tcp->end());
    }
  }
  summary_.SetFlows(flows);
  summary_.Begin(start_ns, end_ns);
  for (const auto& rec : pending_) summary_.Add(rec);
  pending_.clear();
  learned_.clear();
  const network::NetSummaryResult r = summary_.Summary();
  correlator::NetworkSection out;
  out.measured = true;
  out.flows = flows.size();
  for (const auto& row : r.rows) out.rows.push_back({row.cause, row.seconds, row.share});
  out.total_seconds = r.total_seconds;
  out.retransmits = r.retransmits;
  out.retransmits_spurious = r.retransmits_spurious;
  for (const auto& [reason, count] : r.drops_by_reason) {
    const std::string name = reason < drop_names.size() && !drop_names[reason].empty()
                                 ? drop_names[reason]
                                 : fmt::format("reason_{}", reason);
    out.drops[name] += count;
  }
  return out;
}

void NetworkObserver::Learn(const network::FlowKey& flow, const iso_rec_hdr& hdr) {
  if (!flow.Valid() || (hdr.cgroup_v2_id == 0 && hdr.cgroup_v1_cpu_id == 0)) return;
  if (owners_.size() >= kMaxFlows) owners_.clear();  // bounded; owners are learned again
  owners_[flow] = correlator::WorkloadOf(hdr.cgroup_v2_id, hdr.cgroup_v1_cpu_id);
}

void NetworkObserver::OnRecord(const iso_rec_hdr& hdr, std::span<const std::byte> bytes) {
  if (hdr.kind == ISO_REC_TRACEPARENT) {
    iso_rec_traceparent rec;
    std::memcpy(&rec, bytes.data(), sizeof(rec));
    Learn(network::FlowFromTraceparent(rec), hdr);
    return;
  }
  if (hdr.kind != ISO_REC_NET) return;
  iso_rec_net rec;
  std::memcpy(&rec, bytes.data(), sizeof(rec));
  const network::FlowKey flow = network::FlowFromNet(rec);
  if (rec.flags & ISO_NET_F_TASK) Learn(flow, hdr);
  const network::NetInterval interval = network::MakeInterval(rec, attributor_.Attribute(rec));
  correlator::WorkloadKey owner;
  if (auto it = owners_.find(flow); it != owners_.end()) owner = it->second;
  callback_(interval, owner);
}

void RequestLog::Add(const SpanOutcome& outcome) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.push_back(outcome);
  if (pending_.size() > kMax) {
    pending_.pop_front();
    ++dropped_;
  }
}

std::vector<correlator::RequestReport> RequestLog::Take(const correlator::TargetFilter& filter) {
  std::deque<SpanOutcome> taken;
  {
    std::lock_guard<std::mutex> lock(mu_);
    taken.swap(pending_);
  }
  std::vector<correlator::RequestReport> out;
  for (const auto& o : taken) {
    const auto& r = o.result;
    if (r.binding == correlator::Binding::kNone ||
        !filter.Matches(r.tgid, r.cgroup_v2_id, r.cgroup_v1_cpu_id)) {
      continue;
    }
    correlator::RequestReport rr;
    rr.trace_id = HexId(o.trace_id);
    rr.span_id = HexId(o.span_id);
    rr.binding = std::string(correlator::BindingName(r.binding));
    rr.breakdown = r.breakdown;
    rr.verdict = r.verdict;
    out.push_back(std::move(rr));
  }
  return out;
}

std::uint64_t RequestLog::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

}  // namespace isoscope::correlator
