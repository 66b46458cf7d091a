// C++ companion of abi.h: taxonomy names, layer lookup and record validation.
// Names are the ones in shared/TAXONOMY.md and are used verbatim in the CLI,
// JSON, span attributes and metric labels.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

extern "C" {
#include "isoscope/abi.h"
}

namespace isoscope::abi {

static_assert(sizeof(iso_rec_hdr) == 40, "iso_rec_hdr is part of the ABI");
static_assert(sizeof(iso_thread_totals) == 200, "iso_thread_totals is part of the ABI");
static_assert(sizeof(iso_rec_thread_totals) == 240, "iso_rec_thread_totals is part of the ABI");
static_assert(sizeof(iso_rec_kvm) == 64, "iso_rec_kvm is part of the ABI");
static_assert(sizeof(iso_rec_node) == 56, "iso_rec_node is part of the ABI");
static_assert(sizeof(iso_kvm_exit_key) == 16 && sizeof(iso_kvm_exit_val) == 40);
static_assert(sizeof(iso_blk_done) == 32 && sizeof(iso_blk_req) == 24 && sizeof(iso_cpu_state) == 16);
static_assert(sizeof(iso_blk_done_cpu) == 8 + 32 * ISO_BLK_DONE_SLOTS);
static_assert(sizeof(iso_rec_delay) == 56, "iso_rec_delay is part of the ABI");
static_assert(sizeof(iso_rec_traceparent) == 120, "iso_rec_traceparent is part of the ABI");
static_assert(sizeof(iso_rec_net) == 136, "iso_rec_net is part of the ABI");
static_assert(sizeof(iso_file_hdr) == 128, "iso_file_hdr is part of the ABI");
static_assert(sizeof(iso_rec_thread_totals) % 8 == 0 && sizeof(iso_rec_delay) % 8 == 0);

enum class Layer : std::uint8_t { kHypervisor, kParavirt, kContainer, kSandbox, kNetwork, kApp };

std::string_view LayerName(Layer layer);
std::optional<Layer> LayerFromName(std::string_view name);

// Causes are identified by enum iso_cause values.
using Cause = std::uint32_t;

// "container.cpu_throttle", "network.pod.queue", ...; empty for an unknown id.
std::string_view CauseName(Cause cause);
std::optional<Cause> CauseFromName(std::string_view name);
Layer CauseLayer(Cause cause);
// The network slice name ("pod") for network causes, empty otherwise.
std::string_view CauseSlice(Cause cause);
inline constexpr Cause NetworkCause(std::uint32_t slice, std::uint32_t mechanism) {
  return ISO_CAUSE_NETWORK_BASE + slice * ISO_NET_MECHANISM_MAX + mechanism;
}
// A verdict may blame every layer but the workload's own (`app`).
inline bool Blamable(Cause cause) { return CauseLayer(cause) != Layer::kApp; }

// Expected size of a record kind, 0 when the kind is unknown or reserved.
std::size_t RecordSize(std::uint16_t kind);

// Checks a raw record: header readable, known kind, exact size, our ABI version.
// Returns an empty string when valid, else a reason fit for a log line.
std::string ValidateRecord(const void* data, std::size_t len);

}  // namespace isoscope::abi
