// Synthetic record builders for unit tests: the same bytes the live path
// produces, built in memory.
#pragma once

#include <cstring>
#include <initializer_list>
#include <utility>
#include <vector>

#include "isoscope/abi.hpp"

namespace isoscope::testing {

using Bytes = std::vector<std::byte>;

template <typename T>
Bytes ToBytes(const T& rec) {
  Bytes out(sizeof(T));
  std::memcpy(out.data(), &rec, sizeof(T));
  return out;
}

inline iso_rec_hdr Header(std::uint16_t kind, std::uint16_t size, std::uint64_t ts_ns,
                          std::uint32_t tgid = 0, std::uint32_t tid = 0) {
  iso_rec_hdr h{};
  h.kind = kind;
  h.size = size;
  h.abi_version = ISO_ABI_VERSION;
  h.tgid = tgid;
  h.tid = tid;
  h.ts_ns = ts_ns;
  return h;
}

// Cumulative totals of one thread as BPF keeps them.
class ThreadBuilder {
 public:
  ThreadBuilder(std::uint32_t tgid, std::uint32_t tid) {
    t_.tgid = tgid;
    tid_ = tid;
    std::strncpy(t_.comm, "synthetic", sizeof(t_.comm) - 1);
  }
  ThreadBuilder& Cgroups(std::uint64_t v2, std::uint64_t v1_cpu) {
    t_.cgroup_v2_id = v2;
    t_.cgroup_v1_cpu_id = v1_cpu;
    return *this;
  }
  // Adds closed time to a cause.
  ThreadBuilder& Add(std::uint32_t cause, std::uint64_t ns) {
    t_.cause_ns[cause] += ns;
    return *this;
  }
  // The segment open since `start_ns`.
  ThreadBuilder& Open(std::uint32_t cause, std::uint64_t start_ns) {
    t_.seg_cause = cause;
    t_.seg_start_ns = start_ns;
    return *this;
  }
  // A vCPU thread of a VMM (ran KVM_RUN).
  ThreadBuilder& Vcpu() {
    t_.flags |= ISO_TF_VCPU;
    return *this;
  }
  // Closed time a vCPU spent asleep in an exit (part of app.blocked_other).
  ThreadBuilder& Halted(std::uint64_t ns) {
    t_.halted_ns += ns;
    return *this;
  }
  Bytes Totals(std::uint64_t ts_ns, std::uint16_t kind = ISO_REC_THREAD_TOTALS) const {
    iso_rec_thread_totals rec{};
    rec.hdr = Header(kind, sizeof(rec), ts_ns, t_.tgid, tid_);
    rec.hdr.cgroup_v2_id = t_.cgroup_v2_id;
    rec.hdr.cgroup_v1_cpu_id = t_.cgroup_v1_cpu_id;
    rec.t = t_;
    return ToBytes(rec);
  }
  Bytes Exit(std::uint64_t ts_ns) const {
    ThreadBuilder closed = *this;
    closed.t_.seg_start_ns = ts_ns;  // BPF closes the segment before emitting
    return closed.Totals(ts_ns, ISO_REC_THREAD_EXIT);
  }

 private:
  iso_thread_totals t_{};
  std::uint32_t tid_;
};

inline Bytes Snapshot(std::uint64_t ts_ns) {
  return ToBytes(Header(ISO_REC_SNAPSHOT, sizeof(iso_rec_hdr), ts_ns));
}

// Cumulative exits of one reason of a vCPU thread, as the snapshot reads vcpu_exits.
inline Bytes KvmExits(std::uint32_t tgid, std::uint32_t tid, std::uint32_t isa,
                      std::uint32_t reason, std::uint64_t count, std::uint64_t ns,
                      std::uint64_t ts_ns, std::uint64_t cgroup_v2_id = 0) {
  iso_rec_kvm rec{};
  rec.hdr = Header(ISO_REC_KVM, sizeof(rec), ts_ns, tgid, tid);
  rec.hdr.cgroup_v2_id = cgroup_v2_id;
  rec.isa = isa;
  rec.reason = reason;
  rec.count = count;
  rec.ns = ns;
  return ToBytes(rec);
}

// Cumulative steal of one CPU at a snapshot.
inline Bytes NodeCpu(std::uint32_t cpu, std::uint64_t idle_steal_ns, std::uint64_t kernel_steal_ns,
                     std::uint64_t ts_ns) {
  iso_rec_node rec{};
  rec.hdr = Header(ISO_REC_NODE, sizeof(rec), ts_ns, 0, cpu);
  rec.idle_steal_ns = idle_steal_ns;
  rec.kernel_steal_ns = kernel_steal_ns;
  return ToBytes(rec);
}

inline Bytes Delay(std::uint32_t tgid, std::uint32_t tid, std::uint32_t cause,
                   std::uint64_t start_ns, std::uint64_t end_ns) {
  iso_rec_delay rec{};
  rec.hdr = Header(ISO_REC_DELAY, sizeof(rec), end_ns, tgid, tid);
  rec.start_ns = start_ns;
  rec.cause = cause;
  return ToBytes(rec);
}

}  // namespace isoscope::testing

namespace isoscope::testing {

inline Bytes Traceparent(std::uint32_t tgid, std::uint32_t tid, std::uint64_t ts_ns,
                         std::uint8_t trace_seed, std::uint8_t parent_seed) {
  iso_rec_traceparent rec{};
  rec.hdr = Header(ISO_REC_TRACEPARENT, sizeof(rec), ts_ns, tgid, tid);
  for (std::size_t i = 0; i < sizeof(rec.trace_id); ++i) rec.trace_id[i] = trace_seed + i;
  for (std::size_t i = 0; i < sizeof(rec.parent_span_id); ++i) rec.parent_span_id[i] = parent_seed + i;
  rec.family = 2;
  rec.trace_flags = 1;
  return ToBytes(rec);
}

}  // namespace isoscope::testing

namespace isoscope::testing {

// A network record as bpf/network.bpf.c emits it. IPv4 addresses are given as
// 0xaabbccdd for a.b.c.d and stored as on the wire; ports in host order.
struct NetBuilder {
  iso_rec_net rec{};
  NetBuilder(std::uint8_t event, std::uint8_t mech, std::uint64_t start_ns, std::uint64_t end_ns) {
    rec.hdr = Header(ISO_REC_NET, sizeof(rec), end_ns);
    rec.start_ns = start_ns;
    rec.event = event;
    rec.mech = mech;
  }
  NetBuilder& Flow(std::uint32_t saddr, std::uint16_t sport, std::uint32_t daddr,
                   std::uint16_t dport) {
    rec.family = 2;
    const std::uint8_t s[4] = {static_cast<std::uint8_t>(saddr >> 24),
                               static_cast<std::uint8_t>(saddr >> 16),
                               static_cast<std::uint8_t>(saddr >> 8),
                               static_cast<std::uint8_t>(saddr)};
    const std::uint8_t d[4] = {static_cast<std::uint8_t>(daddr >> 24),
                               static_cast<std::uint8_t>(daddr >> 16),
                               static_cast<std::uint8_t>(daddr >> 8),
                               static_cast<std::uint8_t>(daddr)};
    std::memcpy(rec.saddr, s, 4);
    std::memcpy(rec.daddr, d, 4);
    rec.sport = sport;
    rec.dport = dport;
    return *this;
  }
  NetBuilder& Device(std::uint32_t ifindex, const char* kind, const char* name,
                     bool host_netns) {
    rec.ifindex = ifindex;
    std::strncpy(rec.dev_kind, kind, sizeof(rec.dev_kind));
    std::strncpy(rec.dev_name, name, sizeof(rec.dev_name) - 1);
    if (host_netns) rec.flags |= ISO_NET_F_HOST_NETNS;
    return *this;
  }
  NetBuilder& Socket(std::uint64_t sock, std::uint32_t tgid, std::uint32_t tid, bool host_netns) {
    rec.sock = sock;
    rec.hdr.tgid = tgid;
    rec.hdr.tid = tid;
    rec.flags |= ISO_NET_F_SOCK | ISO_NET_F_TASK | (host_netns ? ISO_NET_F_HOST_NETNS : 0);
    return *this;
  }
  Bytes Build() const { return ToBytes(rec); }
  // An IPv6 flow: 16-byte addresses as on the wire.
  NetBuilder& Flow6(const std::uint8_t (&saddr)[16], std::uint16_t sport,
                    const std::uint8_t (&daddr)[16], std::uint16_t dport) {
    rec.family = 10;
    std::memcpy(rec.saddr, saddr, 16);
    std::memcpy(rec.daddr, daddr, 16);
    rec.sport = sport;
    rec.dport = dport;
    return *this;
  }
  NetBuilder& Reason(std::uint16_t reason) {
    rec.reason = reason;
    return *this;
  }
  NetBuilder& Len(std::uint32_t bytes) {
    rec.bytes = bytes;
    return *this;
  }
  NetBuilder& Netns(std::uint32_t netns_ino) {
    rec.netns_ino = netns_ino;
    return *this;
  }
  // The record itself (for APIs that take iso_rec_net, not bytes).
  const iso_rec_net& Rec() const { return rec; }
};

}  // namespace isoscope::testing
