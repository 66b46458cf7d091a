#include "collectors/hypervisor/exit_reasons.hpp"

#include <array>
#include <utility>

#include "isoscope/abi.hpp"

namespace isoscope::hypervisor {
namespace {

using Entry = std::pair<std::uint32_t, std::string_view>;

// VMX basic exit reasons (Intel SDM vol. 3, appendix C; arch/x86/include/uapi/asm/vmx.h).
constexpr std::array<Entry, 36> kVmx = {{
    {0, "exception_nmi"},
    {1, "external_interrupt"},
    {2, "triple_fault"},
    {3, "init_signal"},
    {7, "interrupt_window"},
    {8, "nmi_window"},
    {9, "task_switch"},
    {10, "cpuid"},
    {12, "hlt"},
    {13, "invd"},
    {14, "invlpg"},
    {15, "rdpmc"},
    {16, "rdtsc"},
    {18, "vmcall"},
    {28, "cr_access"},
    {29, "dr_access"},
    {30, "io"},
    {31, "msr_read"},
    {32, "msr_write"},
    {33, "invalid_state"},
    {36, "mwait"},
    {37, "monitor_trap"},
    {39, "monitor"},
    {40, "pause"},
    {41, "mce_during_vmentry"},
    {43, "tpr_below_threshold"},
    {44, "apic_access"},
    {45, "eoi_induced"},
    {46, "gdtr_idtr"},
    {47, "ldtr_tr"},
    {48, "ept_violation"},
    {49, "ept_misconfig"},
    {52, "preemption_timer"},
    {54, "wbinvd"},
    {55, "xsetbv"},
    {56, "apic_write"},
}};

// SVM exit codes (AMD APM vol. 2, appendix C; arch/x86/include/uapi/asm/svm.h).
constexpr std::array<Entry, 28> kSvm = {{
    {0x40 + 14, "pf_excp"},
    {0x40 + 6, "ud_excp"},
    {0x40 + 1, "db_excp"},
    {0x40 + 3, "bp_excp"},
    {0x40 + 17, "ac_excp"},
    {0x40 + 18, "mc_excp"},
    {0x060, "intr"},
    {0x061, "nmi"},
    {0x062, "smi"},
    {0x063, "init"},
    {0x064, "vintr"},
    {0x072, "cpuid"},
    {0x075, "rsm"},
    {0x076, "iret"},
    {0x078, "hlt"},
    {0x079, "invlpg"},
    {0x07a, "invlpga"},
    {0x07b, "io"},
    {0x07c, "msr"},
    {0x07d, "task_switch"},
    {0x07f, "shutdown"},
    {0x080, "vmrun"},
    {0x081, "vmmcall"},
    {0x08b, "xsetbv"},
    {0x08d, "efer_write_trap"},
    {0x077, "pause"},
    {0x400, "npf"},
    {0x403, "avic_unaccelerated_access"},
}};

// struct kvm_run exit_reason (include/uapi/linux/kvm.h, KVM_EXIT_*).
constexpr std::array<Entry, 20> kUserspace = {{
    {0, "unknown"},     {1, "exception"},       {2, "io"},
    {3, "hypercall"},   {4, "debug"},           {5, "hlt"},
    {6, "mmio"},        {7, "irq_window_open"}, {8, "shutdown"},
    {9, "fail_entry"},  {10, "intr"},           {11, "set_tpr"},
    {12, "tpr_access"}, {17, "internal_error"}, {24, "system_event"},
    {29, "x86_rdmsr"},  {30, "x86_wrmsr"},      {31, "dirty_ring_full"},
    {33, "xen"},        {39, "memory_fault"},
}};

template <std::size_t N>
std::string_view Find(const std::array<Entry, N>& table, std::uint32_t reason) {
  for (const auto& [code, name] : table) {
    if (code == reason) return name;
  }
  return "other";
}

}  // namespace

std::string_view ExitKind(std::uint32_t isa) {
  return isa == ISO_KVM_ISA_USERSPACE ? "vmm" : "kernel";
}

std::string_view IsaName(std::uint32_t isa) {
  switch (isa) {
    case ISO_KVM_ISA_VMX:
      return "vmx";
    case ISO_KVM_ISA_SVM:
      return "svm";
    default:
      return "";
  }
}

std::string_view ExitReasonName(std::uint32_t isa, std::uint32_t reason) {
  switch (isa) {
    case ISO_KVM_ISA_VMX:
      return Find(kVmx, reason & 0xffffu);  // bits 31..16 are flags (entry failure, ...)
    case ISO_KVM_ISA_SVM:
      return Find(kSvm, reason);
    case ISO_KVM_ISA_USERSPACE:
      return Find(kUserspace, reason);
    default:
      return "other";
  }
}

}  // namespace isoscope::hypervisor
