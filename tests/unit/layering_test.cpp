// The folder order of docs/architecture.md, checked on every `#include "..."` of the product's
// sources (no root, no BPF): a folder may include its own level or one below it, never one above.
//
//   common (0) < bpf ABI (1) < collectors (2) < correlator (3) < exporters (4) < agent (5)
//
// Also: an include names its folder from the repository root ("collectors/network/flow.hpp", not
// "flow.hpp"); and the layer folders under collectors/ are vertical slices — one may include the
// shared inputs (collectors/source, collectors/identity) but not a sibling layer.
//
// The tree checked is the source tree of this build; ISOSCOPE_LAYERING_ROOT names another one
// (how the check was shown to fail on the tree before the move: docs/architecture.md).
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace {

namespace fs = std::filesystem;

struct Level {
  int rank = 0;
  std::string name;
};

// The product folders in order; tests/ and bench/ sit above all of them and are not checked.
const std::vector<std::string> kFolders = {"common",     "bpf",       "collectors",
                                           "correlator", "exporters", "agent"};

// Shared inputs every collectors/<layer> may use.
const std::set<std::string> kSharedCollectors = {"source", "identity"};

std::optional<Level> FolderLevel(const std::string& first) {
  for (std::size_t i = 0; i < kFolders.size(); ++i) {
    if (kFolders[i] == first) return Level{static_cast<int>(i), first};
  }
  return std::nullopt;
}

std::vector<std::string> Split(const std::string& path) {
  std::vector<std::string> parts;
  for (const auto& p : fs::path(path)) parts.push_back(p.string());
  return parts;
}

// The level of an include path as written, or nullopt when it names no folder.
std::optional<Level> IncludeLevel(const std::string& inc) {
  const auto parts = Split(inc);
  if (parts.size() < 2) {
    // "isoscope.skel.h": bpftool's skeleton of bpf/*.bpf.c, generated into the build tree for
    // the loader; only agent/ opens the BPF object.
    if (inc == "isoscope.skel.h") return Level{5, "agent (generated skeleton)"};
    return std::nullopt;
  }
  // The BPF ABI and shared BPF headers: bpf/include is their include root (the BPF programs are
  // compiled with it, and C++ shares the ABI header).
  if (parts[0] == "isoscope") return Level{1, "bpf"};
  // Code generated from collectors/otlp/proto (the OTLP messages and services) and from
  // collectors/identity/proto (CRI runtime.v1).
  if (parts[0] == "opentelemetry") return Level{2, "collectors (generated OTLP)"};
  if (parts[0] == "runtime") return Level{2, "collectors (generated CRI)"};
  return FolderLevel(parts[0]);
}

struct Violation {
  std::string where;  // file:line
  std::string what;
};

std::vector<Violation> CheckTree(const fs::path& root) {
  static const std::regex kInclude(R"re(^\s*#\s*include\s+"([^"]+)")re");
  std::vector<Violation> out;
  for (const auto& folder : kFolders) {
    const fs::path dir = root / folder;
    if (!fs::is_directory(dir)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(dir)) {
      if (!entry.is_regular_file()) continue;
      const auto ext = entry.path().extension().string();
      if (ext != ".cpp" && ext != ".hpp" && ext != ".h" && ext != ".c") continue;
      const std::string rel = fs::relative(entry.path(), root).string();
      const auto from_parts = Split(rel);
      const Level from = *FolderLevel(from_parts[0]);
      std::ifstream in(entry.path());
      std::string line;
      int lineno = 0;
      while (std::getline(in, line)) {
        ++lineno;
        std::smatch m;
        if (!std::regex_search(line, m, kInclude)) continue;
        const std::string inc = m[1];
        const std::string where = rel + ":" + std::to_string(lineno);
        auto to = IncludeLevel(inc);
        if (!to) {
          // Not written from the repository root. Find what it opens (the including file's
          // folder, or a product folder used as an include directory) to say which level it is.
          std::string opened;
          if (fs::exists(entry.path().parent_path() / inc)) {
            opened = fs::relative(entry.path().parent_path() / inc, root).lexically_normal();
          } else {
            for (const auto& f : kFolders) {
              if (fs::exists(root / f / inc)) opened = (fs::path(f) / inc).string();
            }
          }
          out.push_back({where, "\"" + inc + "\" names no folder (write it from the repository " +
                                    "root" + (opened.empty() ? "" : ": \"" + opened + "\"") + ")"});
          if (opened.empty()) continue;
          to = FolderLevel(Split(opened)[0]);
          if (to && to->rank > from.rank) {
            out.push_back({where, from.name + " includes \"" + opened + "\" from " + to->name +
                                      ", a higher folder"});
          }
          continue;
        }
        if (to->rank > from.rank) {
          out.push_back({where, from.name + " includes \"" + inc + "\" from " + to->name +
                                    ", a higher folder"});
          continue;
        }
        // Vertical slices: collectors/<layer>/ does not include a sibling layer.
        const auto to_parts = Split(inc);
        if (from.name == "collectors" && to_parts[0] == "collectors" && from_parts.size() > 2 &&
            to_parts.size() > 2 && from_parts[1] != to_parts[1] &&
            !kSharedCollectors.count(from_parts[1]) && !kSharedCollectors.count(to_parts[1])) {
          out.push_back({where, "collectors/" + from_parts[1] + " includes \"" + inc +
                                    "\" from the sibling layer collectors/" + to_parts[1]});
        }
      }
    }
  }
  std::sort(out.begin(), out.end(),
            [](const Violation& a, const Violation& b) { return a.where < b.where; });
  return out;
}

fs::path TreeRoot() {
  if (const char* env = std::getenv("ISOSCOPE_LAYERING_ROOT"); env && *env) return env;
  return ISOSCOPE_SOURCE_DIR;
}

TEST(Layering, NoFolderIncludesOneAboveIt) {
  const fs::path root = TreeRoot();
  ASSERT_TRUE(fs::is_directory(root / "collectors")) << root;
  const auto violations = CheckTree(root);
  std::string report;
  for (const auto& v : violations) report += "  " + v.where + ": " + v.what + "\n";
  EXPECT_TRUE(violations.empty()) << violations.size() << " include(s) break the folder order "
                                  << "(docs/architecture.md) in " << root.string() << ":\n"
                                  << report;
}

// The checker itself, on a tree written here: each kind of violation is found, at its line, and
// the allowed includes are not reported.
TEST(Layering, CheckerFindsEachKindOfViolation) {
  const fs::path root = fs::path(::testing::TempDir()) / "layering_tree";
  fs::remove_all(root);
  auto write = [&](const std::string& rel, const std::string& text) {
    fs::create_directories((root / rel).parent_path());
    std::ofstream(root / rel) << text;
  };
  write("common/result.hpp", "#include <string>\n");
  write("collectors/network/flow.hpp",
        "#include \"common/result.hpp\"\n"
        "#include \"isoscope/abi.hpp\"\n"
        "#include \"collectors/source/event_source.hpp\"\n"
        "#include \"correlator/breakdown.hpp\"\n");  // line 4: up
  write("collectors/container/thread_table.hpp",
        "// x\n#include \"collectors/network/flow.hpp\"\n");  // line 2: sibling layer
  write("exporters/table/trace_table.cpp", "#include \"trace_table.hpp\"\n");  // names no folder
  write("agent/main.cpp",
        "#include \"exporters/table/trace_table.hpp\"\n#include \"isoscope.skel.h\"\n");
  write("common/log.cpp", "  #  include \"agent/commands.hpp\"\n");  // up, odd spacing
  // Through agent/ as an include directory: names no folder, and opens a higher one.
  write("agent/util/result.hpp", "#include <string>\n");
  write("collectors/source/event_source.hpp", "\n\n#include \"util/result.hpp\"\n");

  const auto v = CheckTree(root);
  std::vector<std::string> where;
  for (const auto& x : v) where.push_back(x.where);
  EXPECT_THAT(where,
              ::testing::UnorderedElementsAre(
                  "collectors/network/flow.hpp:4", "collectors/container/thread_table.hpp:2",
                  "exporters/table/trace_table.cpp:1", "common/log.cpp:1",
                  "collectors/source/event_source.hpp:3", "collectors/source/event_source.hpp:3"));
  ASSERT_EQ(v.size(), 6u);
  std::vector<std::string> what;
  for (const auto& x : v) what.push_back(x.what);
  EXPECT_THAT(what, ::testing::Contains(::testing::HasSubstr(
                        "collectors includes \"agent/util/result.hpp\" from agent")));
  fs::remove_all(root);
}

}  // namespace
