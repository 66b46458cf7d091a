// Span-join throughput benchmark (docs/benchmarks.md, "Horizontal axis (OTLP) benchmark").
//
//   span_join_bench [--seconds S] [--rate RECORDS_PER_S] [--spans N] [--lag-rounds R] [--json]
//
// --lag-rounds R (default 200): spans are drawn from the last R requests of each server thread
// (256 threads, so R=200 is ~0.4 s behind the producer at 600k records/s), as spans reach the
// agent a while after they end.
//
// A background thread feeds a correlator::EvidenceStore through an EvidenceSink with synthetic
// kernel records (tests/testing/event_builder.hpp: ISO_REC_TRACEPARENT bindings and
// ISO_REC_DELAY segments, the records the live source delivers) at a paced rate (default
// 600k records/s), advancing the watermark after every batch as the live source does. The
// main thread meanwhile builds realistic OTLP ExportTraceServiceRequests (100 spans each: 90
// SERVER spans whose parent context was bound to a server thread with delay segments in the
// span, 5 SERVER spans with no binding that fall back to the resource's process.pid, 5
// INTERNAL spans that pass through) and runs correlator::EnrichSpans on them, the agent's
// correlation step.
//
// Reported: spans correlated per second of the main thread's CPU time
// (CLOCK_THREAD_CPUTIME_ID, i.e. per core), per-span join latency p50/p99 (time between
// consecutive SpanObserver calls, i.e. join + attribute writes of one span), per-request
// latency, the achieved record rate and the producer's CPU. Building the requests is not
// timed (the agent gets them from the decoder).
#include <pthread.h>
#include <time.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "collectors/otlp/otlp_codec.hpp"
#include "correlator/span_enricher.hpp"
#include "correlator/span_join.hpp"
#include "tests/testing/event_builder.hpp"

namespace {

namespace tb = isoscope::testing;
namespace corr = isoscope::correlator;
namespace trace = opentelemetry::proto::trace::v1;

constexpr std::uint32_t kProcesses = 4;
constexpr std::uint32_t kThreadsPerProcess = 64;
constexpr std::uint32_t kThreads = kProcesses * kThreadsPerProcess;
constexpr std::uint32_t kTgidBase = 4000000;  // above any real pid_max default
constexpr std::uint32_t kTidBase = 4100000;
constexpr std::size_t kRing = 1u << 20;  // published span slots remembered (power of two)
constexpr int kDelaysPerSlot = 4;

std::uint64_t Now(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

std::uint64_t Mix(std::uint64_t x) {  // splitmix64 finaliser: ids derived from a slot number
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void SlotIds(std::uint64_t slot, corr::TraceId& trace_id, corr::SpanId& parent) {
  const std::uint64_t a = Mix(slot), b = Mix(slot ^ 0xabcdefull), c = Mix(slot ^ 0x123457ull);
  std::memcpy(trace_id.data(), &a, 8);
  std::memcpy(trace_id.data() + 8, &b, 8);
  std::memcpy(parent.data(), &c, 8);
}

std::uint32_t SlotTid(std::uint64_t slot) { return kTidBase + static_cast<std::uint32_t>(slot % kThreads); }
std::uint32_t SlotTgid(std::uint64_t slot) {
  return kTgidBase + static_cast<std::uint32_t>((slot % kThreads) / kThreadsPerProcess);
}

// One served request per slot: [start, end) on the boot clock of thread SlotTid(slot).
struct SlotTimes {
  std::atomic<std::uint64_t> start{0};
  std::atomic<std::uint64_t> end{0};
};

struct Shared {
  corr::EvidenceStore store;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> published{0};  // slots [0, published) are in the store
  std::atomic<std::uint64_t> records{0};
  std::vector<SlotTimes> ring = std::vector<SlotTimes>(kRing);
  std::uint64_t producer_cpu_ns = 0;
  std::uint64_t producer_wall_ns = 0;
};

// Feeds records at `rate`/s in 1 ms batches: per slot one binding and kDelaysPerSlot delay
// segments of its thread inside the slot's window (so every bound span has evidence).
void Produce(Shared& sh, double rate) {
  corr::EvidenceSink sink(sh.store);
  std::vector<std::uint64_t> last_end(kThreads, 0);
  const std::uint64_t cpu0 = Now(CLOCK_THREAD_CPUTIME_ID);
  const std::uint64_t t0 = Now(CLOCK_MONOTONIC);
  std::uint64_t emitted = 0;
  std::uint64_t slot = 0;
  // Records are built once with the test builders and then patched per record (the live path
  // hands the sink ring-buffer bytes without allocating; neither does this producer).
  const tb::Bytes tp_template = tb::Traceparent(0, 0, 0, 0, 0);
  const tb::Bytes delay_template = tb::Delay(0, 0, 0, 0, 0);
  iso_rec_traceparent tp;
  iso_rec_delay delay;
  std::memcpy(&tp, tp_template.data(), sizeof(tp));
  std::memcpy(&delay, delay_template.data(), sizeof(delay));
  const auto emit = [&](const auto& rec) {
    sink.OnRecord(rec.hdr, std::span<const std::byte>(reinterpret_cast<const std::byte*>(&rec),
                                                      sizeof(rec)));
    ++emitted;
  };
  while (!sh.stop.load(std::memory_order_relaxed)) {
    const double elapsed_s = static_cast<double>(Now(CLOCK_MONOTONIC) - t0) / 1e9;
    // At most 2 ms worth of records per batch: a producer that fell behind (descheduled on a
    // busy machine) catches up in small batches, each followed by a watermark, as the live
    // source's drains are; it does not stall the watermark with one huge batch.
    const auto due = std::min(static_cast<std::uint64_t>(rate * elapsed_s),
                              emitted + static_cast<std::uint64_t>(rate / 500) + 1);
    const bool behind = static_cast<std::uint64_t>(rate * elapsed_s) > due;
    const std::uint64_t now = Now(CLOCK_BOOTTIME);
    while (emitted < due) {
      const std::uint32_t idx = static_cast<std::uint32_t>(slot % kThreads);
      const std::uint32_t tid = SlotTid(slot), tgid = SlotTgid(slot);
      std::uint64_t start = last_end[idx] ? last_end[idx] : now - 5000000;
      std::uint64_t end = std::max(now, start + 16000);
      last_end[idx] = end;
      // The request's traceparent, read by this thread at the start of the request.
      corr::TraceId trace_id;
      corr::SpanId parent;
      SlotIds(slot, trace_id, parent);
      tp.hdr.tgid = tgid;
      tp.hdr.tid = tid;
      tp.hdr.ts_ns = start + 1000;
      tp.hdr.cgroup_v2_id = 1000 + tgid % 16;
      std::memcpy(tp.trace_id, trace_id.data(), sizeof(tp.trace_id));
      std::memcpy(tp.parent_span_id, parent.data(), sizeof(tp.parent_span_id));
      emit(tp);
      // Delay segments in the odd eighths of the window: run queue, throttle, I/O, reclaim.
      static constexpr std::uint32_t kCauses[kDelaysPerSlot] = {
          ISO_CAUSE_CONTAINER_RUNQUEUE, ISO_CAUSE_CONTAINER_CPU_THROTTLE,
          ISO_CAUSE_APP_BLOCKED_IO, ISO_CAUSE_CONTAINER_MEMORY_RECLAIM};
      const std::uint64_t eighth = (end - start) / 8;
      delay.hdr.tgid = tgid;
      delay.hdr.tid = tid;
      for (int i = 0; i < kDelaysPerSlot; ++i) {
        delay.start_ns = start + (2 * i + 1) * eighth;
        delay.hdr.ts_ns = delay.start_ns + eighth;
        delay.cause = kCauses[i];
        emit(delay);
      }
      sh.ring[slot % kRing].start.store(start, std::memory_order_relaxed);
      sh.ring[slot % kRing].end.store(end, std::memory_order_relaxed);
      ++slot;
      sh.published.store(slot, std::memory_order_release);
    }
    sink.OnWatermark(Now(CLOCK_BOOTTIME));
    sh.records.store(emitted, std::memory_order_relaxed);
    if (!behind) std::this_thread::sleep_for(std::chrono::microseconds(1000));
  }
  sh.producer_cpu_ns = Now(CLOCK_THREAD_CPUTIME_ID) - cpu0;
  sh.producer_wall_ns = Now(CLOCK_MONOTONIC) - t0;
}

void Attr(trace::Span* span, const char* key, const std::string& v) {
  auto* kv = span->add_attributes();
  kv->set_key(key);
  kv->mutable_value()->set_string_value(v);
}
void AttrInt(trace::Span* span, const char* key, std::int64_t v) {
  auto* kv = span->add_attributes();
  kv->set_key(key);
  kv->mutable_value()->set_int_value(v);
}

// A request of one service process, as the OpenTelemetry SDKs send it: resource attributes,
// one scope, `n` spans.
void BuildRequest(isoscope::otlp::TraceRequest& req, const Shared& sh, std::mt19937_64& rng,
                  int n, std::int64_t unix_minus_boot, std::uint64_t lag_rounds) {
  req.Clear();
  const std::uint64_t published = sh.published.load(std::memory_order_acquire);
  const std::uint32_t proc = static_cast<std::uint32_t>(rng() % kProcesses);
  auto* rs = req.add_resource_spans();
  auto* res = rs->mutable_resource();
  const auto rattr = [&](const char* k, const std::string& v) {
    auto* kv = res->add_attributes();
    kv->set_key(k);
    kv->mutable_value()->set_string_value(v);
  };
  rattr("service.name", "checkout-" + std::to_string(proc));
  rattr("telemetry.sdk.language", "nodejs");
  rattr("telemetry.sdk.name", "opentelemetry");
  rattr("telemetry.sdk.version", "2.12.0");
  rattr("host.name", "node-1");
  auto* pid = res->add_attributes();
  pid->set_key("process.pid");
  pid->mutable_value()->set_int_value(kTgidBase + proc);
  auto* ss = rs->add_scope_spans();
  ss->mutable_scope()->set_name("@opentelemetry/instrumentation-http");
  ss->mutable_scope()->set_version("0.57.0");
  // Slots of this process among the most recent `lag_rounds` rounds (one round = one request
  // per thread): spans reach the agent a while after they end (BatchSpanProcessor delay).
  const std::uint64_t window = std::min<std::uint64_t>(published / kThreads, lag_rounds + 1);
  for (int i = 0; i < n; ++i) {
    auto* span = ss->add_spans();
    const int kind_pick = i % 20;  // 18 bound SERVER, 1 unbound SERVER, 1 INTERNAL per 20
    std::uint64_t start, end;
    corr::TraceId trace_id;
    corr::SpanId parent;
    if (kind_pick < 19 && window > 1) {
      const std::uint64_t round = published / kThreads - 1 - rng() % (window - 1);
      const std::uint64_t slot =
          round * kThreads + proc * kThreadsPerProcess + rng() % kThreadsPerProcess;
      SlotIds(slot, trace_id, parent);
      start = sh.ring[slot % kRing].start.load(std::memory_order_relaxed);
      end = sh.ring[slot % kRing].end.load(std::memory_order_relaxed);
      if (kind_pick == 18) {  // a request whose traceparent the kernel did not see
        const std::uint64_t r = rng();
        std::memcpy(trace_id.data(), &r, 8);
      }
    } else {
      const std::uint64_t a = rng(), b = rng(), c = rng();
      std::memcpy(trace_id.data(), &a, 8);
      std::memcpy(trace_id.data() + 8, &b, 8);
      std::memcpy(parent.data(), &c, 8);
      end = Now(CLOCK_BOOTTIME) - 2000000;
      start = end - 1000000;
    }
    const std::uint64_t span_id = rng() | 1;
    span->set_trace_id(trace_id.data(), trace_id.size());
    span->set_span_id(&span_id, 8);
    span->set_parent_span_id(parent.data(), parent.size());
    span->set_flags(0x301);
    span->set_start_time_unix_nano(start + unix_minus_boot);
    span->set_end_time_unix_nano(end + unix_minus_boot);
    if (kind_pick == 19) {
      span->set_name("db.query");
      span->set_kind(trace::Span::SPAN_KIND_INTERNAL);
      Attr(span, "db.system", "postgresql");
      continue;
    }
    span->set_name("GET /api/items/{id}");
    span->set_kind(trace::Span::SPAN_KIND_SERVER);
    Attr(span, "http.request.method", "GET");
    Attr(span, "url.path", "/api/items/" + std::to_string(rng() % 100000));
    Attr(span, "url.scheme", "http");
    Attr(span, "http.route", "/api/items/{id}");
    Attr(span, "server.address", "checkout.svc");
    AttrInt(span, "server.port", 8080);
    AttrInt(span, "http.response.status_code", 200);
    Attr(span, "network.peer.address", "10.0.3.17");
    span->mutable_status()->set_code(trace::Status::STATUS_CODE_UNSET);
  }
}

double Percentile(std::vector<std::uint64_t>& v, double p) {
  if (v.empty()) return 0;
  const std::size_t k = std::min(v.size() - 1, static_cast<std::size_t>(p / 100.0 * v.size()));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return static_cast<double>(v[k]);
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 5, rate = 600000;
  int spans_per_request = 100;
  std::uint64_t lag_rounds = 200;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(64);
      }
      return argv[++i];
    };
    if (a == "--seconds") {
      seconds = std::atof(next());
    } else if (a == "--rate") {
      rate = std::atof(next());
    } else if (a == "--spans") {
      spans_per_request = std::atoi(next());
    } else if (a == "--lag-rounds") {
      lag_rounds = std::strtoull(next(), nullptr, 10);
    } else if (a == "--json") {
      json = true;
    } else {
      std::fprintf(stderr, "usage: %s [--seconds S] [--rate RECORDS_PER_S] [--spans N] [--lag-rounds R] [--json]\n",
                   argv[0]);
      return 64;
    }
  }
  if (seconds <= 0 || rate <= 0 || spans_per_request <= 0 || lag_rounds < 1) return 64;

  Shared sh;
  const std::int64_t unix_minus_boot =
      static_cast<std::int64_t>(Now(CLOCK_REALTIME)) - static_cast<std::int64_t>(Now(CLOCK_BOOTTIME));
  std::thread producer([&] {
    pthread_setname_np(pthread_self(), "producer");
    Produce(sh, rate);
  });
  // Warm-up: let the store fill for a moment (and the producer reach its pace).
  std::this_thread::sleep_for(std::chrono::milliseconds(500));

  isoscope::correlator::EnrichStats stats;
  std::mt19937_64 rng(42);
  isoscope::otlp::TraceRequest req;
  std::vector<std::uint64_t> span_ns, request_ns;
  span_ns.reserve(static_cast<std::size_t>(seconds * 2e6));
  std::uint64_t last = 0;
  const isoscope::correlator::SpanObserver observer = [&](const isoscope::correlator::SpanOutcome&) {
    const std::uint64_t t = Now(CLOCK_MONOTONIC);
    span_ns.push_back(t - last);
    last = t;
  };
  const std::uint64_t records0 = sh.records.load();
  const std::uint64_t wall0 = Now(CLOCK_MONOTONIC);
  const std::uint64_t end_at = wall0 + static_cast<std::uint64_t>(seconds * 1e9);
  std::uint64_t cpu_ns = 0, requests = 0;
  while (Now(CLOCK_MONOTONIC) < end_at) {
    BuildRequest(req, sh, rng, spans_per_request, unix_minus_boot, lag_rounds);
    const std::uint64_t c0 = Now(CLOCK_THREAD_CPUTIME_ID);
    const std::uint64_t w0 = Now(CLOCK_MONOTONIC);
    last = w0;
    isoscope::correlator::EnrichSpans(req, sh.store, stats, observer);
    const std::uint64_t w1 = Now(CLOCK_MONOTONIC);
    cpu_ns += Now(CLOCK_THREAD_CPUTIME_ID) - c0;
    request_ns.push_back(w1 - w0);
    ++requests;
  }
  const std::uint64_t wall_ns = Now(CLOCK_MONOTONIC) - wall0;
  const std::uint64_t records = sh.records.load() - records0;
  sh.stop = true;
  producer.join();
  const corr::EvidenceStats es = sh.store.stats();

  const std::uint64_t seen = stats.spans_seen.load();
  const std::uint64_t bound_thread = stats.spans_bound_thread.load();
  const std::uint64_t bound_process = stats.spans_bound_process.load();
  const std::uint64_t unbound = stats.spans_unbound.load();
  const double cpu_s = static_cast<double>(cpu_ns) / 1e9;
  const double wall_s = static_cast<double>(wall_ns) / 1e9;
  const double spans_per_core_s = cpu_s > 0 ? static_cast<double>(seen) / cpu_s : 0;
  const double spans_per_wall_s = static_cast<double>(seen) / wall_s;
  const double records_per_s = static_cast<double>(records) / wall_s;
  const double producer_core_pct = sh.producer_wall_ns
      ? 100.0 * static_cast<double>(sh.producer_cpu_ns) / static_cast<double>(sh.producer_wall_ns) : 0;
  const double producer_ns_per_record = sh.records.load()
      ? static_cast<double>(sh.producer_cpu_ns) / static_cast<double>(sh.records.load()) : 0;
  const double p50 = Percentile(span_ns, 50), p99 = Percentile(span_ns, 99),
               p999 = Percentile(span_ns, 99.9);
  const double r50 = Percentile(request_ns, 50), r99 = Percentile(request_ns, 99);

  if (json) {
    std::printf(
        "{\"seconds\":%.3f,\"lag_rounds\":%llu,\"target_records_per_s\":%.0f,\"records_per_s\":%.0f,"
        "\"requests\":%llu,\"spans_per_request\":%d,\"spans_joined\":%llu,"
        "\"bound_thread\":%llu,\"bound_process\":%llu,\"unbound\":%llu,"
        "\"joins_without_full_evidence\":%llu,\"enrich_cpu_s\":%.4f,"
        "\"spans_per_core_s\":%.0f,\"spans_per_wall_s\":%.0f,\"span_p50_ns\":%.0f,"
        "\"span_p99_ns\":%.0f,\"span_p999_ns\":%.0f,\"request_p50_us\":%.1f,"
        "\"request_p99_us\":%.1f,\"producer_core_pct\":%.1f,\"producer_ns_per_record\":%.0f,"
        "\"store_delays\":%llu,\"store_bindings\":%llu,\"store_evicted\":%llu}\n",
        wall_s, static_cast<unsigned long long>(lag_rounds), rate, records_per_s, static_cast<unsigned long long>(requests), spans_per_request,
        static_cast<unsigned long long>(seen), static_cast<unsigned long long>(bound_thread),
        static_cast<unsigned long long>(bound_process), static_cast<unsigned long long>(unbound),
        static_cast<unsigned long long>(stats.joins_without_full_evidence.load()), cpu_s,
        spans_per_core_s, spans_per_wall_s, p50, p99, p999, r50 / 1e3, r99 / 1e3,
        producer_core_pct, producer_ns_per_record, static_cast<unsigned long long>(es.delays),
        static_cast<unsigned long long>(es.bindings), static_cast<unsigned long long>(es.evicted));
    return 0;
  }
  std::printf("span_join_bench: %.1f s, background records %.0f/s (target %.0f/s), "
              "%llu requests x %d spans\n",
              wall_s, records_per_s, rate, static_cast<unsigned long long>(requests),
              spans_per_request);
  std::printf("  spans drawn from the last %llu requests of each thread: ~%.0f ms behind the producer\n",
              static_cast<unsigned long long>(lag_rounds),
              records_per_s > 0 ? lag_rounds * kThreads / (records_per_s / (1 + kDelaysPerSlot)) * 1e3 : 0.0);
  std::printf("  SERVER spans joined:        %llu (thread %llu, process %llu, none %llu)\n",
              static_cast<unsigned long long>(seen), static_cast<unsigned long long>(bound_thread),
              static_cast<unsigned long long>(bound_process),
              static_cast<unsigned long long>(unbound));
  std::printf("  spans correlated per core-s: %.0f  (EnrichSpans CPU %.3f s; wall rate %.0f/s)\n",
              spans_per_core_s, cpu_s, spans_per_wall_s);
  std::printf("  per-span latency:           p50 %.0f ns, p99 %.0f ns, p99.9 %.0f ns\n", p50, p99,
              p999);
  std::printf("  per-request (100 spans):    p50 %.1f us, p99 %.1f us\n", r50 / 1e3, r99 / 1e3);
  std::printf("  producer:                   %.1f%% of a core, %.0f ns/record\n",
              producer_core_pct, producer_ns_per_record);
  std::printf("  store: %llu delays, %llu bindings, %llu evicted; joins without full evidence %llu\n",
              static_cast<unsigned long long>(es.delays), static_cast<unsigned long long>(es.bindings),
              static_cast<unsigned long long>(es.evicted),
              static_cast<unsigned long long>(stats.joins_without_full_evidence.load()));
  return 0;
}
