#pragma once
// Scratch files of a test: unique paths under the temporary directory, and
// reading a whole file back.
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <fmt/format.h>

namespace voucherd::test {

// /tmp/vd-<stem>-<pid>-<n>: unique within the run (a counter) and across
// test processes running in parallel (the pid). The caller removes it.
inline std::string temp_path(const std::string& stem) {
  static std::atomic<unsigned> counter{0};
  return (std::filesystem::temp_directory_path() / fmt::format("vd-{}-{}-{}", stem, ::getpid(), counter++)).string();
}

// The whole file ("" when it does not exist yet).
inline std::string read_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

}  // namespace voucherd::test
