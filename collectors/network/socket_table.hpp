// The target's TCP flows from /proc (docs/network.md, "Per target"): the socket inodes a process
// holds (/proc/<pid>/fd links "socket:[N]") matched against the TCP tables of the process's own
// network namespace (/proc/<pid>/net/tcp and tcp6).
//
// Parsing is separate from reading so that it is tested on fixed text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "collectors/network/flow.hpp"
#include "common/result.hpp"

namespace isoscope::network {

inline constexpr std::uint8_t kTcpListen = 0x0A;  // st column of a listening socket

struct TcpSocket {
  FlowKey flow;
  std::uint64_t inode = 0;
  std::uint8_t state = 0;  // the kernel's TCP state (1 ESTABLISHED, 0x0A LISTEN, ...)
};

// The inode of a /proc/<pid>/fd link target "socket:[12345]"; nullopt for anything else.
std::optional<std::uint64_t> SocketInodeFromLink(std::string_view link);

// Parses "0100007F:1F90" (IPv4: the wire-order address as the kernel prints its u32, i.e.
// little-endian hex on x86; port in host-order hex) or the 32-hex-digit IPv6 form (four such
// u32s) into an address buffer and port.
bool ParseProcAddress(std::string_view text, std::uint16_t family, std::uint8_t (&addr)[16],
                      std::uint16_t* port);

// Parses the whole text of /proc/<pid>/net/tcp (family kAfInet) or tcp6 (kAfInet6), header line
// included. A malformed line is an error naming its line number.
Result<std::vector<TcpSocket>> ParseProcNetTcp(std::string_view text, std::uint16_t family);

// Socket inodes held by `pid` (readlink of every /proc/<pid>/fd entry). `proc` is the procfs
// mount. Fails when the pid does not exist or its fds cannot be read.
Result<std::unordered_set<std::uint64_t>> SocketInodesOfPid(int pid,
                                                            const std::string& proc = "/proc");

// The flows of the TCP sockets held by `pids`, listening sockets excluded, deduplicated and
// sorted. Fails, naming the pid, when one of them does not exist or cannot be read; a missing
// tcp6 table (IPv6 disabled) is not an error.
Result<std::vector<FlowKey>> TcpFlowsOfPids(const std::vector<int>& pids,
                                            const std::string& proc = "/proc");

}  // namespace isoscope::network
