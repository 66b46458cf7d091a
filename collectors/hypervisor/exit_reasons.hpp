// Names of KVM exit reasons (docs/hypervisor.md, "Exit reasons"): the bounded
// `reason` label of hypervisor.vmexit rows and isoscope_vm_exits_total.
#pragma once

#include <cstdint>
#include <string_view>

namespace isoscope::hypervisor {

// "kernel" for an exit the kernel handled (kvm:kvm_exit), "vmm" for one handed
// to the VMM (kvm:kvm_userspace_exit).
std::string_view ExitKind(std::uint32_t isa);
// "vmx", "svm", or "" for userspace exits.
std::string_view IsaName(std::uint32_t isa);
// Lower-case reason name: "io", "hlt", "npf", "msr", "mmio"... Reasons outside
// the tables are "other" (the label set stays bounded).
std::string_view ExitReasonName(std::uint32_t isa, std::uint32_t reason);

}  // namespace isoscope::hypervisor
