// Loads the BPF object (bpf/container.bpf.c + bpf/http.bpf.c, linked; via its
// generated skeleton), switching programs
// on and off from the program table and the feature prober, and attaches
// them. Destroying the object detaches everything.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "features.hpp"
#include "programs.hpp"
#include "util/result.hpp"

struct isoscope_bpf;

namespace isoscope {

struct LoadOptions {
  std::uint32_t filter_tgid = 0;           // 0: every process
  std::uint64_t stream_min_ns = 1000000;   // ISO_REC_DELAY for segments at least this long
  bool track_kthreads = false;
  std::uint32_t max_threads = 65536;       // tasks map entries
  std::uint32_t ringbuf_bytes = 4u << 20;  // power of two
  bool no_optional = false;                // switch every optional program off
  bool no_tp_btf = false;                  // use the raw_tp alternatives (fallback path)
  std::uint32_t max_head_reads = 4;        // reads of one HTTP request head scanned for traceparent
};

struct ProgramState {
  const ProgramSpec* spec = nullptr;
  bool attached = false;
  std::string reason;  // why not attached
};

struct ProgramRunStats {
  std::string name;
  bool attached = false;
  std::uint64_t run_ns = 0;
  std::uint64_t run_cnt = 0;
};

class ContainerProbes {
 public:
  static Result<std::unique_ptr<ContainerProbes>> Open(const LoadOptions& options,
                                                       FeatureProber& prober);
  ~ContainerProbes();
  ContainerProbes(const ContainerProbes&) = delete;
  ContainerProbes& operator=(const ContainerProbes&) = delete;

  const std::vector<ProgramState>& programs() const { return programs_; }
  bool ProgramAttached(const std::string& group) const;
  int tasks_fd() const;
  int events_fd() const;
  // Adds threads that already exist to the tasks map, so a thread that sleeps
  // through a whole trace is still accounted (BPF only sees threads once they
  // have a scheduler event). Entries BPF already made are kept. Returns the
  // number added.
  struct SeedThread {
    std::uint32_t tid = 0;
    std::uint32_t tgid = 0;
    char state = 'S';  // from /proc/<pid>/task/<tid>/stat
    std::uint64_t cgroup_v2_id = 0;
    std::uint64_t cgroup_v1_cpu_id = 0;
    std::string comm;
  };
  std::size_t Seed(const std::vector<SeedThread>& threads, std::uint64_t now_ns);
  // Self counters summed over CPUs, indexed by enum iso_stat.
  std::vector<std::uint64_t> ReadStats() const;
  // Per attached program: cumulative run time and count (non-zero only while
  // kernel.bpf_stats_enabled=1).
  std::vector<ProgramRunStats> ReadRunStats() const;

 private:
  ContainerProbes() = default;
  isoscope_bpf* skel_ = nullptr;
  std::vector<ProgramState> programs_;
};

}  // namespace isoscope
