#include "isoscope/abi.hpp"

#include <cstring>

#include <fmt/format.h>

namespace isoscope::abi {
namespace {

constexpr std::array<std::string_view, 6> kLayerNames = {"hypervisor", "paravirt", "container",
                                                         "sandbox",    "network",  "app"};

constexpr std::array<std::string_view, ISO_CAUSE_NETWORK_BASE> kFixedCauses = {
    "app.on_cpu",
    "app.blocked_io",
    "app.blocked_other",
    "container.runqueue",
    "container.cpu_throttle",
    "container.memory_reclaim",
    "hypervisor.steal",
    "hypervisor.vmexit",
    "container.io_throttle",
    "paravirt.virtio_blk",
    "paravirt.vmm_exit",
    "sandbox.wasm_instantiate",
    "sandbox.wasm_hostcall",
    "sandbox.gvisor_syscall",
};

constexpr std::array<std::string_view, ISO_SLICE_MAX> kSlices = {"sandbox", "pod", "node", "virtio",
                                                                 "remote"};
constexpr std::array<std::string_view, ISO_NET_MECHANISM_MAX> kMechanisms = {"queue", "scheduling",
                                                                             "protocol"};

// Built once: "network.<slice>.<mechanism>" for every slice and mechanism.
const std::array<std::string, ISO_CAUSE_MAX - ISO_CAUSE_NETWORK_BASE>& NetworkNames() {
  static const auto names = [] {
    std::array<std::string, ISO_CAUSE_MAX - ISO_CAUSE_NETWORK_BASE> out;
    for (std::size_t s = 0; s < kSlices.size(); ++s) {
      for (std::size_t m = 0; m < kMechanisms.size(); ++m) {
        out[s * kMechanisms.size() + m] = fmt::format("network.{}.{}", kSlices[s], kMechanisms[m]);
      }
    }
    return out;
  }();
  return names;
}

}  // namespace

std::string_view LayerName(Layer layer) { return kLayerNames[static_cast<std::size_t>(layer)]; }

std::optional<Layer> LayerFromName(std::string_view name) {
  for (std::size_t i = 0; i < kLayerNames.size(); ++i) {
    if (kLayerNames[i] == name) return static_cast<Layer>(i);
  }
  return std::nullopt;
}

std::string_view CauseName(Cause cause) {
  if (cause < ISO_CAUSE_NETWORK_BASE) return kFixedCauses[cause];
  if (cause < ISO_CAUSE_MAX) return NetworkNames()[cause - ISO_CAUSE_NETWORK_BASE];
  return {};
}

std::optional<Cause> CauseFromName(std::string_view name) {
  for (Cause c = 0; c < ISO_CAUSE_MAX; ++c) {
    if (CauseName(c) == name) return c;
  }
  return std::nullopt;
}

Layer CauseLayer(Cause cause) {
  if (cause >= ISO_CAUSE_NETWORK_BASE) return Layer::kNetwork;
  const std::string_view name = CauseName(cause);
  return LayerFromName(name.substr(0, name.find('.'))).value_or(Layer::kApp);
}

std::string_view CauseSlice(Cause cause) {
  if (cause < ISO_CAUSE_NETWORK_BASE || cause >= ISO_CAUSE_MAX) return {};
  return kSlices[(cause - ISO_CAUSE_NETWORK_BASE) / ISO_NET_MECHANISM_MAX];
}

std::size_t RecordSize(std::uint16_t kind) {
  switch (kind) {
    case ISO_REC_THREAD_TOTALS:
    case ISO_REC_THREAD_EXIT:
      return sizeof(iso_rec_thread_totals);
    case ISO_REC_DELAY:
      return sizeof(iso_rec_delay);
    case ISO_REC_SNAPSHOT:
      return sizeof(iso_rec_hdr);
    case ISO_REC_TRACEPARENT:
      return sizeof(iso_rec_traceparent);
    case ISO_REC_NET:
      return sizeof(iso_rec_net);
    case ISO_REC_KVM:
      return sizeof(iso_rec_kvm);
    case ISO_REC_NODE:
      return sizeof(iso_rec_node);
    default:
      return 0;
  }
}

std::string ValidateRecord(const void* data, std::size_t len) {
  if (len < sizeof(iso_rec_hdr)) return fmt::format("record of {} bytes is shorter than its header", len);
  iso_rec_hdr hdr;
  std::memcpy(&hdr, data, sizeof(hdr));
  if (hdr.abi_version != ISO_ABI_VERSION) {
    return fmt::format("record ABI version {} differs from this build's {}", hdr.abi_version,
                       ISO_ABI_VERSION);
  }
  const std::size_t want = RecordSize(hdr.kind);
  if (want == 0) return fmt::format("unknown record kind {}", hdr.kind);
  if (hdr.size != want || len < want) {
    return fmt::format("record kind {} has size {} (buffer {}), expected {}", hdr.kind, hdr.size,
                       len, want);
  }
  if (hdr.kind == ISO_REC_DELAY) {
    iso_rec_delay rec;
    std::memcpy(&rec, data, sizeof(rec));
    if (rec.cause >= ISO_CAUSE_MAX) return fmt::format("delay record with cause {}", rec.cause);
  } else if (hdr.kind == ISO_REC_THREAD_TOTALS || hdr.kind == ISO_REC_THREAD_EXIT) {
    iso_rec_thread_totals rec;
    std::memcpy(&rec, data, sizeof(rec));
    if (rec.t.seg_cause >= ISO_THREAD_CAUSES) {
      return fmt::format("thread record with segment cause {}", rec.t.seg_cause);
    }
  } else if (hdr.kind == ISO_REC_NET) {
    iso_rec_net rec;
    std::memcpy(&rec, data, sizeof(rec));
    if (rec.event == ISO_NET_EV_NONE || rec.event >= ISO_NET_EV_MAX) {
      return fmt::format("network record with event {}", rec.event);
    }
    if (rec.mech >= ISO_NET_MECHANISM_MAX) return fmt::format("network record with mechanism {}", rec.mech);
    if (rec.start_ns > rec.hdr.ts_ns) return "network record ending before it starts";
  } else if (hdr.kind == ISO_REC_KVM) {
    iso_rec_kvm rec;
    std::memcpy(&rec, data, sizeof(rec));
    if (rec.isa != ISO_KVM_ISA_VMX && rec.isa != ISO_KVM_ISA_SVM && rec.isa != ISO_KVM_ISA_USERSPACE) {
      return fmt::format("kvm exit record with isa {}", rec.isa);
    }
  }
  return {};
}

}  // namespace isoscope::abi
