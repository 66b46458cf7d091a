// Loads the BPF object of every layer (bpf/*.bpf.c — container, network, trace context — linked
// into one object with one ring buffer, one stats map and one set of settings; via its generated
// skeleton), switching programs on and off from the program table (agent/programs.cpp) and the
// feature prober, and attaches them. Destroying the object detaches everything. A new layer adds
// its program file, its rows of the program table and its settings here; it gets no loader of its
// own.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/features.hpp"
#include "agent/programs.hpp"
#include "common/result.hpp"

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
  // Network slices (bpf/network.bpf.c, docs/network.md). The intervals' threshold
  // (rodata net_min_ns) is stream_min_ns. The host netns (rodata
  // host_netns_ino) is the inode of /proc/self/ns/net unless given here.
  bool network = true;                     // false: network programs off, rodata net_enabled = 0
  bool steal = true;                       // rodata track_steal: hypervisor.steal (guest side)
  // Whole-disk devs (major << 20 | minor) of the virtio-blk disks (map virtio_blk_devs);
  // unset: the node's virtio_blk disks from sysfs (paravirt::ListBlockDisks).
  std::optional<std::vector<std::uint32_t>> virtio_blk_devs;
  std::uint32_t host_netns_ino = 0;        // 0: stat /proc/self/ns/net
  std::uint32_t kernel_hz = 0;             // rodata kernel_hz; 0: KernelConfigHz()
  // The paravirtual NICs whose device queue is timed (rodata paravirt_ifindex, the virtio
  // slice); unset: the virtio_net devices of the host netns (ParavirtIfindexes). Empty: the
  // TX-completion program (consume_skb) is not loaded. At most 8 are used.
  std::optional<std::vector<std::uint32_t>> paravirt_ifindex;
};

// Cumulative drops of one kernel drop reason (enum skb_drop_reason), summed over CPUs.
struct DropReasonCount {
  std::uint32_t reason = 0;  // the kernel's enum value (255: this value or above)
  std::string name;          // "no_socket", "tcp_csum"... (prefix SKB_DROP_REASON_ stripped,
                             // lower case); "reason_<n>" when the kernel BTF does not name it
  std::uint64_t count = 0;
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

class Probes {
 public:
  static Result<std::unique_ptr<Probes>> Open(const LoadOptions& options, FeatureProber& prober);
  ~Probes();
  Probes(const Probes&) = delete;
  Probes& operator=(const Probes&) = delete;

  const std::vector<ProgramState>& programs() const { return programs_; }
  bool ProgramAttached(const std::string& group) const;
  int tasks_fd() const;
  int events_fd() const;
  int vcpu_exits_fd() const;  // -1 when the hypervisor programs are off
  int cpu_state_fd() const;   // -1 when steal is not tracked
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
  // Drops counted by the kfree_skb program, one entry per reason seen (count > 0),
  // in reason order. Empty when the network programs are off.
  std::vector<DropReasonCount> ReadDropReasons() const;
  // The paravirtual NICs (ifindex) given to BPF; empty when none.
  const std::vector<std::uint32_t>& paravirt_ifindex() const { return paravirt_ifindex_; }

 private:
  Probes() = default;
  isoscope_bpf* skel_ = nullptr;
  std::vector<ProgramState> programs_;
  std::vector<std::string> drop_reason_names_;  // index: enum skb_drop_reason value
  std::vector<std::uint32_t> paravirt_ifindex_;
  bool steal_ = true;
};

// Names of the kernel's enum skb_drop_reason values from its BTF, indexed by value
// (SKB_DROP_REASON_ stripped, lower case; SKB_CONSUMED -> "consumed"); empty when the
// kernel has no such enum or no BTF.
std::vector<std::string> KernelDropReasonNames();

// The inode of this process's network namespace (/proc/self/ns/net), 0 if unknown.
std::uint32_t SelfNetnsInode();

// CONFIG_HZ of the running kernel from /boot/config-<release> or /proc/config.gz, 0 if
// neither is readable (BPF then assumes 250).
std::uint32_t KernelConfigHz();

}  // namespace isoscope
