// Joins spans (horizontal axis) to kernel evidence (vertical axis).
//
// Evidence kept, bounded in time and memory: per thread, the streamed delay
// segments (ISO_REC_DELAY), and the trace-context bindings seen on inbound
// requests and outbound calls (ISO_REC_TRACEPARENT). A span is bound, best
// first, to: the thread that read the request carrying its trace context, or,
// for a CLIENT/PRODUCER span, the thread that wrote the request carrying the
// span's own id ("thread"); the process named by its resource (`process.pid`,
// "process"); the processes of the container or pod named by its resource
// (`container.id` "container", `k8s.pod.uid` "pod"); the process at the other
// end of the OTLP connection ("peer"); or nothing ("none").
//
// Network intervals of the bound socket's flow (docs/network.md) are laid over
// the bound thread's timeline: they take the moments the thread spent in its
// own (`app`) time, never those the isolation stack held it.
// Spans may arrive seconds late and out of order: evidence is kept for
// `window` (default 60 s) on the kernel's boot clock.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "collectors/source/event_source.hpp"
#include "correlator/breakdown.hpp"

namespace isoscope::correlator {

using TraceId = std::array<std::uint8_t, 16>;
using SpanId = std::array<std::uint8_t, 8>;

enum class Binding { kNone, kThread, kProcess, kContainer, kPod, kPeer };
std::string_view BindingName(Binding binding);

// The socket a bound request was read from or written to, as the kernel saw it
// (iso_rec_traceparent): addresses as on the wire, ports in host order.
struct SocketTuple {
  std::uint64_t sock = 0;
  std::uint16_t family = 0;
  std::array<std::uint8_t, 16> local{};
  std::array<std::uint8_t, 16> peer{};
  std::uint16_t local_port = 0;
  std::uint16_t peer_port = 0;
};

// One classified network interval of a flow (collectors/network).
struct NetPiece {
  std::uint64_t start_ns = 0;
  std::uint64_t end_ns = 0;
  abi::Cause cause = 0;  // a network.<slice>.<mechanism> cause
  // Takes only moments the thread slept (a receive-queue wait: data waiting
  // while its reader ran other work is the reader's own business).
  bool idle_only = false;
};
// The network intervals of the socket's flow overlapping [start, end).
using NetLookup = std::function<std::vector<NetPiece>(const SocketTuple& socket,
                                                      std::uint64_t start_ns,
                                                      std::uint64_t end_ns)>;

struct SpanQuery {
  TraceId trace_id{};
  SpanId span_id{};
  SpanId parent_span_id{};
  std::uint64_t start_boot_ns = 0;  // span start on the boot clock
  std::uint64_t end_boot_ns = 0;
  std::optional<std::uint32_t> resource_pid;  // process.pid resource attribute
  // A CLIENT/PRODUCER span: bound through the outbound request carrying its
  // own span id, not through an inbound one carrying its parent.
  bool outbound = false;
  // Weaker bindings, tried after resource_pid: processes known to belong to
  // the span's container, pod, or OTLP peer (binding says which).
  std::vector<std::uint32_t> candidate_tgids;
  Binding candidate_binding = Binding::kNone;
};

struct SpanResult {
  Binding binding = Binding::kNone;
  std::uint32_t tgid = 0;
  // Cgroups of the bound thread when it read (or sent) the request; 0 when unknown.
  std::uint64_t cgroup_v2_id = 0;
  std::uint64_t cgroup_v1_cpu_id = 0;
  std::vector<std::uint32_t> tids;  // threads whose evidence was used
  std::optional<SocketTuple> socket;  // with a thread binding
  Breakdown breakdown;
  Verdict verdict;
};

struct EvidenceStats {
  std::uint64_t delays = 0;
  std::uint64_t bindings = 0;
  std::uint64_t expired = 0;
  std::uint64_t evicted = 0;  // dropped early to respect max_segments (a loss, counted)
};

class EvidenceStore {
 public:
  struct Limits {
    std::uint64_t window_ns = 60ull * 1000000000ull;
    std::size_t max_segments = 1u << 20;  // all threads together
    std::size_t max_bindings = 1u << 18;
  };
  EvidenceStore() : EvidenceStore(Limits{}) {}
  explicit EvidenceStore(Limits limits) : limits_(limits) {}

  void AddDelay(const iso_rec_delay& rec);
  void AddBinding(const iso_rec_traceparent& rec);
  // Forgets evidence older than now - window.
  void Expire(std::uint64_t now_boot_ns);

  // `net`, when set, supplies the network intervals of the bound socket's flow.
  SpanResult Join(const SpanQuery& span, const NetLookup& net = {}) const;
  // Processes with evidence whose cgroups satisfy `match` (v2 id, v1 cpu id).
  std::vector<std::uint32_t> ProcessesWhere(
      const std::function<bool(std::uint64_t, std::uint64_t)>& match) const;
  EvidenceStats stats() const;

  // How far the evidence reaches: all kernel records from before this boot
  // time are in the store (set by the live source after each drain).
  void SetWatermark(std::uint64_t ns);
  // Waits until the watermark reaches `ns` or `timeout` passes; true if it did.
  // A span that ended a moment ago waits for its last evidence (one drain
  // period, 100 ms) instead of being joined without it.
  bool WaitForWatermark(std::uint64_t ns, std::chrono::milliseconds timeout) const;

 private:
  struct Segment {
    std::uint64_t start_ns;
    std::uint64_t end_ns;
    std::uint32_t cause;
  };
  struct BindingRec {
    std::uint32_t tgid;
    std::uint32_t tid;
    std::uint64_t ts_ns;
    std::uint64_t cgroup_v2_id;
    std::uint64_t cgroup_v1_cpu_id;
    SocketTuple socket;
  };
  // Seconds per cause of one thread over [start, end): streamed segments,
  // the rest counted as app.on_cpu (short delays below the stream threshold
  // included; documented in docs/otlp-correlation.md). Network intervals take
  // the thread's app time they cover.
  void AddThreadWindow(std::uint32_t tid, std::uint64_t start, std::uint64_t end,
                       const std::vector<NetPiece>& net, Breakdown& out) const;
  // Averages the threads of `tgids` over the span; false if none has evidence.
  bool JoinProcesses(const std::vector<std::uint32_t>& tgids, const SpanQuery& span,
                     SpanResult& r) const;
  static std::string BindingKey(const TraceId& trace, const SpanId& parent, bool outbound);

  Limits limits_;
  mutable std::mutex mu_;
  mutable std::condition_variable watermark_cv_;
  std::uint64_t watermark_ns_ = 0;
  std::unordered_map<std::uint32_t, std::deque<Segment>> segments_;  // by tid, ordered by end
  std::unordered_map<std::uint32_t, std::vector<std::uint32_t>> threads_of_;  // tgid -> tids
  std::unordered_map<std::uint32_t, std::pair<std::uint64_t, std::uint64_t>> cgroups_of_;  // tgid
  std::map<std::string, BindingRec> bindings_;  // direction + trace + parent (or own span id)
  std::deque<std::pair<std::uint64_t, std::string>> binding_order_;
  std::size_t segment_count_ = 0;
  EvidenceStats stats_;
};

// Feeds delay and traceparent records from an event source into a store.
class EvidenceSink : public source::RecordSink {
 public:
  explicit EvidenceSink(EvidenceStore& store) : store_(store) {}
  void OnRecord(const iso_rec_hdr& hdr, std::span<const std::byte> bytes) override;
  void OnWatermark(std::uint64_t ns) override { store_.SetWatermark(ns); }

 private:
  EvidenceStore& store_;
};

}  // namespace isoscope::correlator
