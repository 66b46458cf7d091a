// The hypervisor/paravirt layers without a kernel: the attribution arithmetic BPF runs
// (bpf/include/isoscope/attribution.h), exit reason names, and the collector/correlator path of
// vCPU exits and node steal from synthetic records in the live format.
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "collectors/container/thread_table.hpp"
#include "collectors/hypervisor/exit_reasons.hpp"
#include "collectors/hypervisor/proc_steal.hpp"
#include "correlator/vcpu.hpp"
#include "testing/event_builder.hpp"

extern "C" {
#include "isoscope/attribution.h"
}

namespace isoscope {
namespace {

using testing::Bytes;

constexpr std::uint64_t kMs = 1000000;

// ---- steal: a thread on a CPU whose steal clock advances during its slice ----

TEST(StealMath, ClockAdvanceDuringTheSliceIsSteal) {
  // On CPU from 100 ms to 110 ms; the steal clock went 5000 ms -> 5003 ms meanwhile.
  EXPECT_EQ(iso_steal_in_segment(100 * kMs, 110 * kMs, 5000 * kMs, 5003 * kMs), 3 * kMs);
}

TEST(StealMath, NeverMoreThanTheSegment) {
  // A clock that advanced more than the segment lasted (the mark was taken earlier on that
  // CPU): the segment is all steal, not more.
  EXPECT_EQ(iso_steal_in_segment(100 * kMs, 102 * kMs, 0, 9 * kMs), 2 * kMs);
}

TEST(StealMath, NoAdvanceNoSteal) {
  EXPECT_EQ(iso_steal_in_segment(100 * kMs, 110 * kMs, 7 * kMs, 7 * kMs), 0u);
  EXPECT_EQ(iso_steal_in_segment(100 * kMs, 110 * kMs, 7 * kMs, 6 * kMs), 0u);  // went back
  EXPECT_EQ(iso_steal_in_segment(110 * kMs, 110 * kMs, 0, 5 * kMs), 0u);        // empty
}

// ---- block split: an I/O wait ended by the completion of its request ----

iso_blk_done Done(std::uint64_t first, std::uint64_t issue, std::uint64_t complete,
                  std::uint32_t flags) {
  iso_blk_done d{};
  d.first_ns = first;
  d.issue_ns = issue;
  d.complete_ns = complete;
  d.flags = flags;
  return d;
}

TEST(BlockSplit, VirtioDeviceTimeInsideTheWait) {
  // Slept at 10 ms; request issued at 9 ms (before the sleep), completed at 30 ms, woken 30.01.
  const iso_blk_done d = Done(8 * kMs, 9 * kMs, 30 * kMs, ISO_BLK_F_VIRTIO);
  iso_blk_parts s{};
  ASSERT_EQ(iso_blk_split(10 * kMs, 30 * kMs + 10000, &d, &s), 1);
  EXPECT_EQ(s.throttle_end, 10 * kMs);  // no throttle
  EXPECT_EQ(s.device_start, 10 * kMs);  // the device part starts with the wait
  EXPECT_EQ(s.device_end, 30 * kMs);
}

TEST(BlockSplit, ThrottledThenDevice) {
  // Slept at 10 ms; blk-throttle's worker queued the request at 35 ms, issued 36, done 40.
  const iso_blk_done d =
      Done(35 * kMs, 36 * kMs, 40 * kMs, ISO_BLK_F_VIRTIO | ISO_BLK_F_FROM_KTHREAD);
  iso_blk_parts s{};
  ASSERT_EQ(iso_blk_split(10 * kMs, 40 * kMs + 5000, &d, &s), 1);
  EXPECT_EQ(s.throttle_end, 35 * kMs);  // 25 ms held back
  EXPECT_EQ(s.device_start, 36 * kMs);  // 1 ms in the scheduler stays blocked_io
  EXPECT_EQ(s.device_end, 40 * kMs);
}

TEST(BlockSplit, NotVirtioNoDevicePart) {
  const iso_blk_done d = Done(35 * kMs, 36 * kMs, 40 * kMs, ISO_BLK_F_FROM_KTHREAD);
  iso_blk_parts s{};
  ASSERT_EQ(iso_blk_split(10 * kMs, 40 * kMs, &d, &s), 1);
  EXPECT_EQ(s.throttle_end, 35 * kMs);
  EXPECT_EQ(s.device_end, s.device_start);
}

TEST(BlockSplit, SubmittedByTheThreadItselfIsNotThrottle) {
  // First seen after the sleep began but from the thread's own context (e.g. a tag wait):
  // not blk-throttle.
  const iso_blk_done d = Done(12 * kMs, 12 * kMs, 20 * kMs, 0);
  iso_blk_parts s{};
  ASSERT_EQ(iso_blk_split(10 * kMs, 20 * kMs, &d, &s), 1);
  EXPECT_EQ(s.throttle_end, 10 * kMs);
}

TEST(BlockSplit, StaleOrForeignCompletionIsIgnored) {
  iso_blk_parts s{};
  const iso_blk_done before = Done(1 * kMs, 2 * kMs, 5 * kMs, ISO_BLK_F_VIRTIO);
  EXPECT_EQ(iso_blk_split(10 * kMs, 20 * kMs, &before, &s), 0);  // completed before the wait
  const iso_blk_done old = Done(11 * kMs, 12 * kMs, 13 * kMs, ISO_BLK_F_VIRTIO);
  EXPECT_EQ(iso_blk_split(10 * kMs, 20 * kMs, &old, &s), 0);  // 7 ms before this wake-up
  const iso_blk_done consumed = Done(11 * kMs, 12 * kMs, 0, ISO_BLK_F_VIRTIO);
  EXPECT_EQ(iso_blk_split(10 * kMs, 20 * kMs, &consumed, &s), 0);
}

// ---- exit reasons ----

TEST(ExitReasons, NamesPerIsa) {
  EXPECT_EQ(hypervisor::ExitReasonName(ISO_KVM_ISA_SVM, 0x7b), "io");
  EXPECT_EQ(hypervisor::ExitReasonName(ISO_KVM_ISA_SVM, 0x78), "hlt");
  EXPECT_EQ(hypervisor::ExitReasonName(ISO_KVM_ISA_SVM, 0x40 + 14), "pf_excp");
  EXPECT_EQ(hypervisor::ExitReasonName(ISO_KVM_ISA_SVM, 0x400), "npf");
  EXPECT_EQ(hypervisor::ExitReasonName(ISO_KVM_ISA_VMX, 30), "io");
  EXPECT_EQ(hypervisor::ExitReasonName(ISO_KVM_ISA_VMX, 48), "ept_violation");
  // VMX: bit 31 flags a failed entry; the basic reason is the low 16 bits.
  EXPECT_EQ(hypervisor::ExitReasonName(ISO_KVM_ISA_VMX, 0x80000000u | 33), "invalid_state");
  EXPECT_EQ(hypervisor::ExitReasonName(ISO_KVM_ISA_USERSPACE, 2), "io");
  EXPECT_EQ(hypervisor::ExitReasonName(ISO_KVM_ISA_USERSPACE, 6), "mmio");
  EXPECT_EQ(hypervisor::ExitReasonName(ISO_KVM_ISA_USERSPACE, 10), "intr");
  EXPECT_EQ(hypervisor::ExitKind(ISO_KVM_ISA_USERSPACE), "vmm");
  EXPECT_EQ(hypervisor::ExitKind(ISO_KVM_ISA_SVM), "kernel");
  EXPECT_EQ(hypervisor::IsaName(ISO_KVM_ISA_VMX), "vmx");
}

TEST(ExitReasons, UnknownReasonsAreOneBoundedLabel) {
  EXPECT_EQ(hypervisor::ExitReasonName(ISO_KVM_ISA_SVM, 0x12345), "other");
  EXPECT_EQ(hypervisor::ExitReasonName(ISO_KVM_ISA_VMX, 250), "other");
  EXPECT_EQ(hypervisor::ExitReasonName(ISO_KVM_ISA_USERSPACE, 999), "other");
  EXPECT_EQ(hypervisor::ExitReasonName(7, 1), "other");
}

// ---- collector + correlator ----

std::vector<container::IntervalSample> Feed(const std::vector<Bytes>& records) {
  std::vector<container::IntervalSample> out;
  container::ThreadTable table([&](const container::IntervalSample& s) { out.push_back(s); });
  for (const Bytes& r : records) {
    iso_rec_hdr h;
    std::memcpy(&h, r.data(), sizeof(h));
    EXPECT_EQ(abi::ValidateRecord(r.data(), r.size()), "");
    table.OnRecord(h, std::span<const std::byte>(r.data(), r.size()));
  }
  return out;
}

TEST(VcpuSection, StatesAndExitsOfTheTargetsVcpuThreads) {
  const std::uint32_t vmm = 700;
  const std::uint32_t vcpu = 701;
  testing::ThreadBuilder v(vmm, vcpu);
  v.Vcpu().Cgroups(55, 0);
  testing::ThreadBuilder main_thread(vmm, vmm);
  main_thread.Cgroups(55, 0);
  testing::ThreadBuilder other(900, 900);  // another process, not a VMM
  other.Cgroups(66, 0).Vcpu();
  std::vector<Bytes> recs;
  // Baseline at t=1 s (the open segment starts at each snapshot: all time is in cause_ns).
  v.Open(ISO_CAUSE_APP_ON_CPU, 1000 * kMs);
  recs.push_back(v.Totals(1000 * kMs));
  recs.push_back(main_thread.Totals(1000 * kMs));
  recs.push_back(testing::KvmExits(vmm, vcpu, ISO_KVM_ISA_SVM, 0x7b, 3, 2 * kMs, 1000 * kMs, 55));
  recs.push_back(testing::Snapshot(1000 * kMs));
  // One second later.
  v.Add(ISO_CAUSE_APP_ON_CPU, 400 * kMs)
      .Add(ISO_CAUSE_HYPERVISOR_VMEXIT, 100 * kMs)
      .Add(ISO_CAUSE_PARAVIRT_VMM_EXIT, 200 * kMs)
      .Add(ISO_CAUSE_APP_BLOCKED_OTHER, 250 * kMs)
      .Halted(200 * kMs)
      .Add(ISO_CAUSE_HYPERVISOR_STEAL, 50 * kMs);
  v.Open(ISO_CAUSE_APP_ON_CPU, 2000 * kMs);
  main_thread.Add(ISO_CAUSE_APP_BLOCKED_OTHER, 1000 * kMs);
  other.Add(ISO_CAUSE_APP_ON_CPU, 1000 * kMs);
  recs.push_back(v.Totals(2000 * kMs));
  recs.push_back(main_thread.Totals(2000 * kMs));
  recs.push_back(other.Totals(2000 * kMs));
  recs.push_back(testing::KvmExits(vmm, vcpu, ISO_KVM_ISA_SVM, 0x7b, 23, 12 * kMs, 2000 * kMs, 55));
  recs.push_back(
      testing::KvmExits(vmm, vcpu, ISO_KVM_ISA_USERSPACE, 2, 20, 200 * kMs, 2000 * kMs, 55));
  recs.push_back(testing::KvmExits(900, 900, ISO_KVM_ISA_SVM, 0x78, 9, 1 * kMs, 2000 * kMs, 66));
  recs.push_back(testing::Snapshot(2000 * kMs));
  const auto samples = Feed(recs);
  ASSERT_EQ(samples.size(), 1u);

  correlator::TargetFilter filter;
  filter.tgid = vmm;
  const correlator::VcpuSection s = correlator::BuildVcpuSection(samples[0], filter);
  ASSERT_EQ(s.threads, 1u);  // the VMM's main thread is not a vCPU; pid 900 is not the target
  EXPECT_DOUBLE_EQ(s.total.guest_s, 0.4);
  EXPECT_DOUBLE_EQ(s.total.vmexit_s, 0.1);
  EXPECT_DOUBLE_EQ(s.total.vmm_exit_s, 0.2);
  EXPECT_DOUBLE_EQ(s.total.halted_s, 0.2);  // of 0.25 s asleep, 0.2 s in an exit (HLT)
  EXPECT_DOUBLE_EQ(s.total.steal_s, 0.05);
  EXPECT_EQ(s.total.exits, 40u);  // 20 kernel io exits in the interval + 20 vmm io exits
  ASSERT_EQ(s.exits.size(), 2u);
  for (const auto& e : s.exits) {
    EXPECT_EQ(e.reason, "io");
    EXPECT_EQ(e.count, 20u);
    if (e.kind == "kernel") {
      EXPECT_EQ(e.isa, "svm");
      EXPECT_DOUBLE_EQ(e.seconds, 0.010);  // 12 ms cumulative - 2 ms at the baseline
    } else {
      EXPECT_EQ(e.kind, "vmm");
      EXPECT_DOUBLE_EQ(e.seconds, 0.2);
    }
  }
  ASSERT_EQ(s.per_thread.size(), 1u);
  EXPECT_EQ(s.per_thread[0].tid, vcpu);
}

TEST(NodeSteal, DeltasPerCpuAfterTheBaselineAndThreadsWithoutVcpus) {
  testing::ThreadBuilder a(10, 10);
  testing::ThreadBuilder vcpu(20, 21);
  vcpu.Vcpu();
  std::vector<Bytes> recs = {testing::NodeCpu(0, 1 * kMs, 100 * kMs, 1000 * kMs),
                             testing::NodeCpu(1, 0, 200 * kMs, 1000 * kMs), a.Totals(1000 * kMs),
                             vcpu.Totals(1000 * kMs), testing::Snapshot(1000 * kMs)};
  a.Add(ISO_CAUSE_HYPERVISOR_STEAL, 30 * kMs).Add(ISO_CAUSE_APP_ON_CPU, 970 * kMs);
  vcpu.Add(ISO_CAUSE_HYPERVISOR_STEAL, 500 * kMs).Add(ISO_CAUSE_APP_ON_CPU, 500 * kMs);
  for (const Bytes& r : {testing::NodeCpu(0, 11 * kMs, 140 * kMs, 2000 * kMs),
                         testing::NodeCpu(1, 0, 200 * kMs, 2000 * kMs), a.Totals(2000 * kMs),
                         vcpu.Totals(2000 * kMs), testing::Snapshot(2000 * kMs)}) {
    recs.push_back(r);
  }
  const auto samples = Feed(recs);
  ASSERT_EQ(samples.size(), 1u);
  const correlator::NodeStealSection n = correlator::BuildNodeSteal(samples[0]);
  EXPECT_TRUE(n.measured);
  EXPECT_DOUBLE_EQ(n.kernel_s, 0.040);
  EXPECT_DOUBLE_EQ(n.idle_s, 0.010);
  EXPECT_DOUBLE_EQ(n.threads_s, 0.030);  // the vCPU thread's (host-side) steal is left out
  EXPECT_EQ(samples[0].node_steal.kernel_ns_per_cpu.at(0), 40 * kMs);
  EXPECT_EQ(samples[0].node_steal.kernel_ns_per_cpu.at(1), 0u);
}

TEST(ThreadTableSplit, AWaitRetaggedAfterASnapshotIsNotCountedTwice) {
  // A read sleeps from 0.9 s; the snapshot at 1 s counts the open 0.1 s as blocked_io; at
  // 1.05 s the completion re-tags the whole wait as io_throttle; the thread then sleeps.
  testing::ThreadBuilder t(1, 1);
  std::vector<Bytes> recs;
  t.Add(ISO_CAUSE_APP_ON_CPU, 500 * kMs).Open(ISO_CAUSE_APP_BLOCKED_OTHER, 500 * kMs);
  recs.push_back(t.Totals(500 * kMs));
  recs.push_back(testing::Snapshot(500 * kMs));
  testing::ThreadBuilder at1 = t;
  at1.Add(ISO_CAUSE_APP_BLOCKED_OTHER, 400 * kMs).Open(ISO_CAUSE_APP_BLOCKED_IO, 900 * kMs);
  recs.push_back(at1.Totals(1000 * kMs));
  recs.push_back(testing::Snapshot(1000 * kMs));
  testing::ThreadBuilder at2 = t;
  at2.Add(ISO_CAUSE_APP_BLOCKED_OTHER, 400 * kMs)
      .Add(ISO_CAUSE_CONTAINER_IO_THROTTLE, 150 * kMs)
      .Open(ISO_CAUSE_APP_BLOCKED_OTHER, 1050 * kMs);
  recs.push_back(at2.Totals(2000 * kMs));
  recs.push_back(testing::Snapshot(2000 * kMs));
  const auto samples = Feed(recs);
  ASSERT_EQ(samples.size(), 2u);
  ASSERT_EQ(samples[0].threads.size(), 1u);
  EXPECT_EQ(samples[0].threads[0].ns[ISO_CAUSE_APP_BLOCKED_IO], 100 * kMs);
  EXPECT_EQ(samples[0].threads[0].total_ns(), 500 * kMs);
  ASSERT_EQ(samples[1].threads.size(), 1u);
  const auto& d = samples[1].threads[0];
  EXPECT_EQ(d.total_ns(), 1000 * kMs);  // the interval's wall time, not 1.1 s
  EXPECT_EQ(d.ns[ISO_CAUSE_CONTAINER_IO_THROTTLE], 50 * kMs);  // 150 re-tagged - 100 counted
  EXPECT_EQ(d.ns[ISO_CAUSE_APP_BLOCKED_OTHER], 950 * kMs);
  // Over both intervals the thread's time adds up exactly.
  EXPECT_EQ(samples[0].threads[0].total_ns() + d.total_ns(), 1500 * kMs);
}

TEST(ProcStatSteal, ReadsTheStealColumnPerCpu) {
  const std::string path = ::testing::TempDir() + "/stat";
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(
        "cpu  10 0 10 100 0 0 0 9 0 0\ncpu0 5 0 5 50 0 0 0 4 0 0\n"
        "cpu1 5 0 5 50 0 0 0 5 0 0\nintr 1 2 3\n",
        f);
    std::fclose(f);
  }
  const auto steal = hypervisor::ReadProcStatSteal(path);
  ASSERT_EQ(steal.size(), 2u);
  const std::uint64_t tick = 1000000000ull / static_cast<std::uint64_t>(sysconf(_SC_CLK_TCK));
  EXPECT_EQ(steal.at(0), 4 * tick);
  EXPECT_EQ(steal.at(1), 5 * tick);
}

}  // namespace
}  // namespace isoscope
