#include "exporters/table/trace_table.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace isoscope::exporters {
namespace {

constexpr std::string_view kSeparator = " · ";
constexpr std::string_view kEllipsis = "…";
constexpr std::string_view kFullBlock = "█";
// Partial blocks for 1/8 .. 7/8 of a cell.
constexpr std::array<std::string_view, 7> kPartialBlocks = {"▏", "▎", "▍", "▌", "▋", "▊", "▉"};
constexpr int kBarWidth = 30;
// Wide enough for the longest taxonomy name ("network.sandbox.scheduling").
constexpr std::size_t kNameWidth = 26;
constexpr std::size_t kRowIndent = 2;
constexpr std::size_t kSecondsWidth = 10;
constexpr std::size_t kShareWidth = 9;  // "   100.0%"

constexpr std::string_view kReset = "\x1b[0m";
constexpr std::string_view kBold = "\x1b[1m";
constexpr std::string_view kDim = "\x1b[2m";
constexpr std::string_view kRed = "\x1b[31m";
constexpr std::string_view kGreen = "\x1b[32m";

std::string_view LayerColor(abi::Layer layer) {
  switch (layer) {
    case abi::Layer::kHypervisor:
      return "\x1b[35m";  // magenta
    case abi::Layer::kParavirt:
      return "\x1b[34m";  // blue
    case abi::Layer::kContainer:
      return "\x1b[33m";  // yellow
    case abi::Layer::kSandbox:
      return "\x1b[32m";  // green
    case abi::Layer::kNetwork:
      return "\x1b[36m";  // cyan
    case abi::Layer::kApp:
      break;
  }
  return "";  // the workload's own time keeps the terminal's colour
}

std::string Paint(std::string_view text, std::string_view style, bool color) {
  if (!color || style.empty() || text.empty()) return std::string(text);
  return fmt::format("{}{}{}", style, text, kReset);
}

// "containerd://3f1a...c2" -> "3f1a…c2"; short ids stay whole.
std::string ShortContainerId(std::string_view id) {
  if (const auto scheme = id.find("://"); scheme != std::string_view::npos) {
    id.remove_prefix(scheme + 3);
  }
  if (id.size() <= 8) return std::string(id);
  return fmt::format("{}{}{}", id.substr(0, 4), kEllipsis, id.substr(id.size() - 2));
}

std::string Header(const correlator::IntervalReport& report) {
  const correlator::TargetInfo& t = report.target;
  std::vector<std::string> parts;
  if (t.pid) {
    parts.push_back(t.comm.empty() ? fmt::format("pid {}", *t.pid)
                                   : fmt::format("pid {} ({})", *t.pid, t.comm));
  } else if (!t.comm.empty()) {
    parts.push_back(fmt::format("comm {}", t.comm));
  }
  if (!t.pod_name.empty()) {
    parts.push_back(fmt::format("pod {}/{}", t.namespace_name, t.pod_name));
  } else if (!t.pod_uid.empty()) {
    parts.push_back(fmt::format("pod {}", t.pod_uid));
  }
  if (!t.sandbox.empty()) parts.push_back(fmt::format("sandbox {}", t.sandbox));
  if (!t.container_name.empty()) {
    parts.push_back(t.container_id.empty() ? fmt::format("container {}", t.container_name)
                                           : fmt::format("container {} ({})", t.container_name,
                                                         ShortContainerId(t.container_id)));
  } else if (!t.container_id.empty()) {
    parts.push_back(fmt::format("container {}", ShortContainerId(t.container_id)));
  }
  // A process target names its cgroup hierarchy mode; a cgroup target names its path too.
  if (!t.pid && !t.cgroup.empty()) {
    parts.push_back(t.cgroup_mode.empty() ? fmt::format("cgroup {}", t.cgroup)
                                          : fmt::format("cgroup {} ({})", t.cgroup, t.cgroup_mode));
  } else if (!t.cgroup_mode.empty()) {
    parts.push_back(fmt::format("cgroup {}", t.cgroup_mode));
  }
  const std::uint32_t threads = report.breakdown.threads;
  parts.push_back(fmt::format("{} thread{}", threads, threads == 1 ? "" : "s"));
  return fmt::format("isoscope trace {}\n", fmt::join(parts, kSeparator));
}

std::string VerdictLine(const correlator::Verdict& v, bool color) {
  if (v.cause) {
    const std::string cause(abi::CauseName(*v.cause));
    return fmt::format("verdict  {}  {:.0f}%  (confidence {:.2f})\n",
                       Paint(cause, fmt::format("{}{}", kBold, kRed), color), v.share * 100.0,
                       v.confidence);
  }
  return fmt::format("verdict  {}  (top isolation share {:.1f}%, confidence {:.2f})\n",
                     Paint("none", fmt::format("{}{}", kBold, kGreen), color), v.share * 100.0,
                     v.confidence);
}

std::string Bar(double share) {
  if (!(share > 0)) return {};
  const long eighths = std::lround(std::min(share, 1.0) * kBarWidth * 8);
  std::string bar;
  for (long i = 0; i < eighths / 8; ++i) bar += kFullBlock;
  if (eighths % 8 != 0) bar += kPartialBlocks[static_cast<std::size_t>(eighths % 8) - 1];
  return bar;
}

std::string CauseRow(abi::Cause c, double seconds, double share_value, bool color) {
  const std::string_view style = LayerColor(abi::CauseLayer(c));
  const std::string name = fmt::format("{:<{}}", abi::CauseName(c), kNameWidth);
  const std::string share = fmt::format("{:.1f}%", share_value * 100.0);
  std::string row = fmt::format("{:{}}{}{:>{}.2f}{:>{}}", "", kRowIndent, Paint(name, style, color),
                                seconds, kSecondsWidth, share, kShareWidth);
  if (const std::string bar = Bar(share_value); !bar.empty()) {
    row += "  ";
    row += Paint(bar, style, color);
  }
  return row + '\n';
}

// The target's network time: per slice and mechanism, shares of the network total.
std::string NetworkBlock(const correlator::NetworkSection& n, bool color) {
  // A target without TCP flows has nothing to say about the network.
  if (!n.measured || (n.flows == 0 && n.rows.empty() && n.retransmits == 0 && n.drops.empty())) {
    return {};
  }
  std::string out = "\n";
  const std::string title =
      fmt::format("network {} flow{}, {:.2f} s", n.flows, n.flows == 1 ? "" : "s", n.total_seconds);
  out += Paint(fmt::format("{:<{}}{:>{}}{:>{}}", title, kRowIndent + kNameWidth, "seconds",
                           kSecondsWidth, "share", kShareWidth),
               kDim, color);
  out += '\n';
  if (n.rows.empty()) out += "  (no network delay measured on the target's flows)\n";
  for (const auto& row : n.rows) out += CauseRow(row.cause, row.seconds, row.share, color);
  if (n.retransmits > 0 || !n.drops.empty()) {
    std::vector<std::string> drops;
    for (const auto& [reason, count] : n.drops) drops.push_back(fmt::format("{} {}", reason, count));
    const std::string spurious =
        n.retransmits_spurious > 0 ? fmt::format(" ({} spurious)", n.retransmits_spurious) : "";
    out += fmt::format("  retransmits {}{}{}{}\n", n.retransmits, spurious,
                       drops.empty() ? "" : " · drops: ", fmt::join(drops, ", "));
  }
  return out;
}

// The last requests joined to spans: trace id, duration, verdict.
std::string RequestBlock(const std::vector<correlator::RequestReport>& requests, bool color) {
  if (requests.empty()) return {};
  constexpr std::size_t kShown = 5;
  std::string out = "\n";
  out += Paint(fmt::format("requests ({} with spans{})", requests.size(),
                           requests.size() > kShown ? fmt::format(", last {}", kShown) : ""),
               kDim, color);
  out += '\n';
  const std::size_t first = requests.size() > kShown ? requests.size() - kShown : 0;
  for (std::size_t i = first; i < requests.size(); ++i) {
    const auto& r = requests[i];
    const std::string verdict =
        r.verdict.cause ? fmt::format("{} {:.0f}%", abi::CauseName(*r.verdict.cause),
                                      r.verdict.share * 100.0)
                        : std::string("none");
    out += fmt::format("  trace {}{}  {:>7.1f} ms  {}  ({})\n", r.trace_id.substr(0, 8), kEllipsis,
                       r.breakdown.interval_s * 1e3,
                       r.verdict.cause ? Paint(verdict, kRed, color) : verdict, r.binding);
  }
  return out;
}

// The target's vCPU threads (docs/hypervisor.md): their states, the top exit reasons, and with
// per_thread one line per vCPU.
std::string VcpuBlock(const correlator::VcpuSection& v, bool per_thread, bool color) {
  if (v.threads == 0) return {};
  auto states = [](const correlator::VcpuTimes& t) {
    return fmt::format("guest {:.3f} s · vmexit {:.3f} s · vmm {:.3f} s · halted {:.3f} s · "
                       "steal {:.3f} s",
                       t.guest_s, t.vmexit_s, t.vmm_exit_s, t.halted_s, t.steal_s);
  };
  std::string out = '\n' + Paint(fmt::format("vCPUs ({} threads)", v.threads), kDim, color) + '\n';
  out += "  " + states(v.total) + '\n';
  if (!v.exits.empty()) {
    std::string exits = "  exits";
    constexpr std::size_t kTop = 4;
    for (std::size_t i = 0; i < v.exits.size() && i < kTop; ++i) {
      const auto& e = v.exits[i];
      exits += fmt::format("{} {}{} {} ({:.3f} s)", i ? "," : "", e.kind == "vmm" ? "vmm." : "",
                           e.reason, e.count, e.seconds);
    }
    if (v.exits.size() > kTop) exits += fmt::format(", {} more reasons", v.exits.size() - kTop);
    out += exits + '\n';
  }
  if (per_thread) {
    for (const auto& t : v.per_thread) {
      out += fmt::format("  tid {} {:<16} {} · {} exits\n", t.tid, t.comm, states(t.times),
                         t.times.exits);
    }
  }
  return out;
}

}  // namespace

std::string RenderTraceTable(const correlator::IntervalReport& report, bool color, bool per_vcpu) {
  const correlator::Breakdown& b = report.breakdown;
  std::string out = Header(report);
  for (const auto& note : report.notes) out += Paint("note: " + note, kDim, color) + '\n';
  out += VerdictLine(report.verdict, color);
  out += '\n';

  const std::string interval =
      fmt::format("interval {:.1f} s, {:.1f} thread-s", b.interval_s, b.thread_seconds);
  // Right-align the column titles over the numbers below them; keep 3 spaces at least.
  const std::size_t seconds_end = kRowIndent + kNameWidth + kSecondsWidth;
  const std::size_t title_width =
      std::max(interval.size() + 3 + std::string_view("seconds").size(), seconds_end) -
      interval.size();
  out +=
      Paint(fmt::format("{}{:>{}}{:>{}}", interval, "seconds", title_width, "share", kShareWidth),
            kDim, color);
  out += '\n';

  std::vector<abi::Cause> rows;
  for (abi::Cause c = 0; c < ISO_CAUSE_MAX; ++c) {
    if (b.seconds[c] > 0) rows.push_back(c);
  }
  std::stable_sort(rows.begin(), rows.end(),
                   [&](abi::Cause x, abi::Cause y) { return b.seconds[x] > b.seconds[y]; });
  if (rows.empty()) {
    out += "  (no thread activity measured in this interval)\n";
    return out;
  }
  for (const abi::Cause c : rows) out += CauseRow(c, b.seconds[c], b.Share(c), color);
  out += NetworkBlock(report.network, color);
  out += VcpuBlock(report.vcpus, per_vcpu, color);
  out += RequestBlock(report.requests, color);
  return out;
}

}  // namespace isoscope::exporters
