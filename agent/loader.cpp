#include "agent/loader.hpp"

#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <zlib.h>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "collectors/network/net_devices.hpp"
#include "collectors/paravirt/block_devices.hpp"
#include "isoscope.skel.h"

namespace isoscope {
namespace {

using network::ListHostNics;
using network::ParavirtIfindexes;

// rodata paravirt_ifindex slots (ISO_NET_PARAVIRT_DEVS in bpf/network.bpf.c).
constexpr std::size_t kMaxParavirtNics = 8;

// One attempt: open, configure, load, attach the programs whose state has no
// reason to be off; attach failures are recorded in their state.
Result<isoscope_bpf*> TryLoad(const LoadOptions& o, std::vector<ProgramState>& programs) {
  isoscope_bpf* skel = isoscope_bpf__open();
  if (!skel) return Error{fmt::format("open BPF object: {}", std::strerror(errno)), errno};

  if (const std::uint32_t version = skel->rodata->abi_version; version != ISO_ABI_VERSION) {
    isoscope_bpf__destroy(skel);
    return MakeError("BPF object ABI version {} differs from the agent's {}", version,
                     ISO_ABI_VERSION);
  }
  skel->rodata->filter_tgid = o.filter_tgid;
  skel->rodata->stream_min_ns = o.stream_min_ns;
  skel->rodata->track_kthreads = o.track_kthreads;
  skel->rodata->track_steal = o.steal;
  bool unthrottle = false;
  for (const auto& p : programs) {
    bpf_program* prog = bpf_object__find_program_by_name(skel->obj, p.spec->name.c_str());
    if (!prog) {
      isoscope_bpf__destroy(skel);
      return MakeError("program table names {} but the BPF object lacks it", p.spec->name);
    }
    bpf_program__set_autoload(prog, p.reason.empty());
    if (p.reason.empty() && p.spec->group == "unthrottle") unthrottle = true;
  }
  skel->rodata->have_unthrottle_probe = unthrottle;
  bool network = false;
  for (const auto& p : programs) network |= p.reason.empty() && p.spec->area == "network";
  skel->rodata->net_enabled = o.network && network;
  // The qdisc is timed by qdisc_enqueue/dequeue unless the plan fell back to net_dev_queue.
  bool qdisc_tp = true;
  for (const auto& p : programs) {
    if (p.reason.empty() && p.spec->target == "net_dev_queue") qdisc_tp = false;
  }
  skel->rodata->qdisc_tp = qdisc_tp;
  skel->rodata->net_min_ns = o.stream_min_ns;
  skel->rodata->host_netns_ino = o.host_netns_ino ? o.host_netns_ino : SelfNetnsInode();
  skel->rodata->kernel_hz = o.kernel_hz ? o.kernel_hz : KernelConfigHz();
  static_assert(sizeof(skel->rodata->paravirt_ifindex) ==
                kMaxParavirtNics * sizeof(skel->rodata->paravirt_ifindex[0]));
  if (o.paravirt_ifindex) {
    const auto& nics = *o.paravirt_ifindex;
    for (std::size_t i = 0; i < nics.size() && i < kMaxParavirtNics; ++i) {
      skel->rodata->paravirt_ifindex[i] = nics[i];
    }
  }
  skel->rodata->max_head_reads = o.max_head_reads;
  bpf_map__set_max_entries(skel->maps.tasks, o.max_threads);
  bpf_map__set_max_entries(skel->maps.events, o.ringbuf_bytes);

  int err = isoscope_bpf__load(skel);
  if (err) {
    isoscope_bpf__destroy(skel);
    return Error{fmt::format("load BPF programs: {}", std::strerror(-err)), -err};
  }
  const std::uint8_t one = 1;
  for (const std::uint32_t dev : o.virtio_blk_devs.value_or(std::vector<std::uint32_t>{})) {
    bpf_map__update_elem(skel->maps.virtio_blk_devs, &dev, sizeof(dev), &one, sizeof(one), BPF_ANY);
  }
  for (auto& p : programs) {
    if (!p.reason.empty()) continue;
    bpf_program* prog = bpf_object__find_program_by_name(skel->obj, p.spec->name.c_str());
    bpf_link* link = bpf_program__attach(prog);
    if (!link) {
      p.reason = fmt::format("attach failed: {}", std::strerror(errno));
      continue;
    }
    // The skeleton owns links it creates for its own attach; keep ours in the
    // program's slot so destroy() detaches them.
    for (int i = 0; i < skel->skeleton->prog_cnt; ++i) {
      if (*skel->skeleton->progs[i].prog == prog) *skel->skeleton->progs[i].link = link;
    }
    p.attached = true;
  }
  return skel;
}

}  // namespace

Result<std::unique_ptr<Probes>> Probes::Open(const LoadOptions& options, FeatureProber& prober) {
  EnsureTracefs();
  for (Feature f : {Feature::kBtf, Feature::kRingBuf, Feature::kBootClock}) {
    FeatureStatus s = prober.Probe(f);
    if (!s.available) {
      return MakeError("the container layer needs {}: {}", FeatureName(f), s.reason);
    }
  }
  LoadOptions opts = options;
  if (!opts.paravirt_ifindex) opts.paravirt_ifindex = ParavirtIfindexes(ListHostNics());
  if (!opts.virtio_blk_devs) {
    opts.virtio_blk_devs.emplace();
    for (const auto& d : paravirt::ListBlockDisks()) {
      if (d.virtio) opts.virtio_blk_devs->push_back(d.dev());
    }
  }
  if (opts.paravirt_ifindex->size() > kMaxParavirtNics) {
    spdlog::warn("{} virtio-net NICs: the device queue is timed on the first {} only",
                 opts.paravirt_ifindex->size(), kMaxParavirtNics);
    opts.paravirt_ifindex->resize(kMaxParavirtNics);
  }
  std::vector<ProgramState> programs;
  for (const auto& d : PlanPrograms(ContainerPrograms(), prober)) {
    std::string reason = d.enabled ? "" : d.reason;
    if (options.no_optional && d.spec->optional && reason.empty()) {
      reason = "switched off by --no-optional-probes";
    }
    if (!options.network && d.spec->area == "network") {
      programs.push_back({d.spec, false, "network probes switched off"});
      continue;
    }
    if (d.spec->group == "consume_skb" && opts.paravirt_ifindex->empty()) {
      programs.push_back({d.spec, false, "no virtio-net NIC in the host netns"});
      continue;
    }
    if (options.no_tp_btf && d.spec->kind == ProgKind::kTpBtf) {
      reason = "switched off by --no-tp-btf";
    } else if (options.no_tp_btf && d.spec->kind == ProgKind::kRawTp && !d.enabled &&
               prober.Probe(Feature::kRawTp).available) {
      reason.clear();  // the raw_tp alternative stands in
      if (options.no_optional && d.spec->optional) reason = "switched off by --no-optional-probes";
    }
    programs.push_back({d.spec, false, reason});
  }

  auto finish = [&](isoscope_bpf* skel,
                    std::vector<ProgramState> states) -> Result<std::unique_ptr<Probes>> {
    for (const auto& p : states) {
      if (p.spec->optional) continue;
      bool group_ok = false;
      for (const auto& q : states) group_ok |= q.spec->group == p.spec->group && q.attached;
      if (!group_ok) {
        isoscope_bpf__destroy(skel);
        return MakeError("required probe {} could not be attached: {}", p.spec->group, p.reason);
      }
    }
    auto probes = std::unique_ptr<Probes>(new Probes());
    probes->skel_ = skel;
    probes->drop_reason_names_ = KernelDropReasonNames();
    probes->paravirt_ifindex_ = *opts.paravirt_ifindex;
    probes->steal_ = opts.steal;
    probes->programs_ = std::move(states);
    for (const auto& p : probes->programs_) {
      if (!p.attached) spdlog::debug("probe {} off: {}", p.spec->name, p.reason);
    }
    return probes;
  };

  // 1. As planned: the common case, one load.
  {
    std::vector<ProgramState> tried = programs;
    auto skel = TryLoad(opts, tried);
    if (skel) return finish(*skel, std::move(tried));
    spdlog::info("BPF load as planned failed ({}); isolating the failing programs",
                 skel.error().message);
  }

  // 2. Required programs only; if that fails, raw_tp in place of tp_btf.
  std::vector<ProgramState> base = programs;
  std::set<std::string> optional_groups;
  for (auto& p : base) {
    if (p.spec->optional && p.reason.empty()) {
      optional_groups.insert(p.spec->group);
      p.reason = "pending";
    }
  }
  auto required_only = TryLoad(opts, base);
  if (!required_only) {
    const Error first = required_only.error();
    std::set<std::string> raw_groups;
    for (const auto& p : base) {
      if (p.spec->kind == ProgKind::kRawTp) raw_groups.insert(p.spec->group);
    }
    for (auto& p : base) {
      if (p.spec->optional) continue;
      if (p.spec->kind == ProgKind::kTpBtf && raw_groups.count(p.spec->group)) {
        p.reason = "tp_btf failed to load: " + first.message;
      } else if (p.spec->kind == ProgKind::kRawTp) {
        p.reason.clear();
      }
    }
    required_only = TryLoad(opts, base);
    if (!required_only) return first.Wrap("container layer unavailable");
  }
  isoscope_bpf__destroy(*required_only);

  // 3. Each optional group on top of the required ones: keep those that load.
  std::set<std::string> loadable;
  for (const auto& group : optional_groups) {
    std::vector<ProgramState> trial = base;
    for (auto& p : trial) {
      if (p.spec->group == group && p.reason == "pending") p.reason.clear();
    }
    for (auto& p : trial) {
      if (p.reason == "pending") p.reason = "not in this trial";
    }
    auto skel = TryLoad(opts, trial);
    if (skel) {
      loadable.insert(group);
      isoscope_bpf__destroy(*skel);
    } else {
      spdlog::warn("optional probe group {} switched off: {}", group, skel.error().message);
      for (auto& p : base) {
        if (p.spec->group == group && p.reason == "pending") {
          p.reason = "failed to load on this kernel: " + skel.error().message;
        }
      }
    }
  }
  for (auto& p : base) {
    if (p.reason == "pending" && loadable.count(p.spec->group)) p.reason.clear();
  }
  auto skel = TryLoad(opts, base);
  if (!skel) return skel.error().Wrap("container layer unavailable");
  return finish(*skel, std::move(base));
}

Probes::~Probes() { isoscope_bpf__destroy(skel_); }

bool Probes::ProgramAttached(const std::string& group) const {
  for (const auto& p : programs_) {
    if (p.spec->group == group && p.attached) return true;
  }
  return false;
}

std::size_t Probes::Seed(const std::vector<SeedThread>& threads, std::uint64_t now_ns) {
  std::size_t added = 0;
  for (const auto& t : threads) {
    iso_thread_totals v{};
    v.tgid = t.tgid;
    v.seg_start_ns = now_ns;
    // A runnable thread in /proc may be on a CPU or waiting for one; the next
    // scheduler event replaces this guess with the real state.
    v.seg_cause = t.state == 'R' ? ISO_CAUSE_APP_ON_CPU : ISO_CAUSE_APP_BLOCKED_OTHER;
    v.steal_cpu = ISO_NO_CPU;
    v.cgroup_v2_id = t.cgroup_v2_id;
    v.cgroup_v1_cpu_id = t.cgroup_v1_cpu_id;
    std::strncpy(v.comm, t.comm.c_str(), sizeof(v.comm) - 1);
    if (bpf_map_update_elem(tasks_fd(), &t.tid, &v, BPF_NOEXIST) == 0) ++added;
  }
  return added;
}

int Probes::tasks_fd() const { return bpf_map__fd(skel_->maps.tasks); }
int Probes::events_fd() const { return bpf_map__fd(skel_->maps.events); }
int Probes::vcpu_exits_fd() const {
  return ProgramAttached("kvm_exit") || ProgramAttached("kvm_userspace_exit")
             ? bpf_map__fd(skel_->maps.vcpu_exits)
             : -1;
}
int Probes::cpu_state_fd() const { return steal_ ? bpf_map__fd(skel_->maps.cpu_state) : -1; }

std::vector<std::uint64_t> Probes::ReadStats() const {
  std::vector<std::uint64_t> out(ISO_STAT_MAX, 0);
  const int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return out;
  std::vector<std::uint64_t> per_cpu(static_cast<std::size_t>(ncpu));
  const int fd = bpf_map__fd(skel_->maps.stats);
  for (std::uint32_t i = 0; i < ISO_STAT_MAX; ++i) {
    if (bpf_map_lookup_elem(fd, &i, per_cpu.data()) != 0) continue;
    for (auto v : per_cpu) out[i] += v;
  }
  return out;
}

std::vector<ProgramRunStats> Probes::ReadRunStats() const {
  std::vector<ProgramRunStats> out;
  for (const auto& p : programs_) {
    ProgramRunStats s{p.spec->name, p.attached, 0, 0};
    if (p.attached) {
      bpf_program* prog = bpf_object__find_program_by_name(skel_->obj, p.spec->name.c_str());
      bpf_prog_info info{};
      __u32 len = sizeof(info);
      if (prog && bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len) == 0) {
        s.run_ns = info.run_time_ns;
        s.run_cnt = info.run_cnt;
      }
    }
    out.push_back(s);
  }
  return out;
}

std::vector<DropReasonCount> Probes::ReadDropReasons() const {
  std::vector<DropReasonCount> out;
  const int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return out;
  const int fd = bpf_map__fd(skel_->maps.drop_reasons);
  const std::uint32_t slots = bpf_map__max_entries(skel_->maps.drop_reasons);
  std::vector<std::uint64_t> per_cpu(static_cast<std::size_t>(ncpu));
  for (std::uint32_t i = 0; i < slots; ++i) {
    if (bpf_map_lookup_elem(fd, &i, per_cpu.data()) != 0) continue;
    std::uint64_t sum = 0;
    for (auto v : per_cpu) sum += v;
    if (sum == 0) continue;
    std::string name = i < drop_reason_names_.size() && !drop_reason_names_[i].empty()
                           ? drop_reason_names_[i]
                           : fmt::format("reason_{}", i);
    out.push_back({i, std::move(name), sum});
  }
  return out;
}

std::vector<std::string> KernelDropReasonNames() {
  std::vector<std::string> names;
  btf* vmlinux = btf__load_vmlinux_btf();
  if (!vmlinux) return names;
  const int id = btf__find_by_name_kind(vmlinux, "skb_drop_reason", BTF_KIND_ENUM);
  if (id > 0) {
    const btf_type* t = btf__type_by_id(vmlinux, id);
    const struct btf_enum* e = btf_enum(t);
    for (int i = 0; i < btf_vlen(t); ++i, ++e) {
      if (e->val < 0 || e->val > 4096) continue;
      std::string name = btf__name_by_offset(vmlinux, e->name_off);
      for (std::string_view prefix : {"SKB_DROP_REASON_", "SKB_"}) {
        if (name.rfind(prefix, 0) == 0) {
          name.erase(0, prefix.size());
          break;
        }
      }
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      const auto v = static_cast<std::size_t>(e->val);
      if (names.size() <= v) names.resize(v + 1);
      names[v] = std::move(name);
    }
  }
  btf__free(vmlinux);
  return names;
}

std::uint32_t KernelConfigHz() {
  static const std::uint32_t hz = [] {
    // The kernel's build config, read in-process (an image of the agent has no shell or zcat):
    // /boot/config-<release>, else /proc/config.gz; gzopen reads plain and gzip files alike.
    std::vector<std::string> paths;
    if (utsname u{}; uname(&u) == 0) paths.push_back(fmt::format("/boot/config-{}", u.release));
    paths.emplace_back("/proc/config.gz");
    std::uint32_t value = 0;
    for (const auto& path : paths) {
      gzFile f = gzopen(path.c_str(), "rb");
      if (f == nullptr) continue;
      char line[256];
      while (gzgets(f, line, sizeof(line)) != nullptr) {
        if (std::strncmp(line, "CONFIG_HZ=", 10) == 0) {
          value = static_cast<std::uint32_t>(std::strtoul(line + 10, nullptr, 10));
        }
      }
      gzclose(f);
      if (value != 0) break;
    }
    return value;
  }();
  return hz;
}

std::uint32_t SelfNetnsInode() {
  struct stat st {};
  if (stat("/proc/self/ns/net", &st) != 0) return 0;
  return static_cast<std::uint32_t>(st.st_ino);
}

}  // namespace isoscope
