#include "support/run_program.hpp"

#include <fcntl.h>
#include <spawn.h>

#include <filesystem>

#include "support/files.hpp"
#include "support/test_db.hpp"

extern char** environ;

namespace voucherd::test {

program_result run_program(const std::vector<std::string>& argv) {
  // Output goes to files rather than pipes: nothing to drain while waiting.
  const auto out_path = temp_path("program-out");
  const auto err_path = temp_path("program-err");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<std::string> args = argv;
  std::vector<char*> c_args;
  for (auto& a : args) c_args.push_back(a.data());
  c_args.push_back(nullptr);
  pid_t pid = 0;
  program_result result;
  const int spawned = posix_spawnp(&pid, c_args[0], &fa, nullptr, c_args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (spawned == 0) result.exit_code = wait_exit(pid);
  else result.err = "cannot start " + argv.at(0);
  result.out = read_file(out_path);
  if (spawned == 0) result.err = read_file(err_path);
  std::filesystem::remove(out_path);
  std::filesystem::remove(err_path);
  return result;
}

}  // namespace voucherd::test
