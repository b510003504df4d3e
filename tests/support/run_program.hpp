#pragma once
// Runs another program (openssl, curl) as a test's operator would, from PATH,
// and captures what it printed. For voucherd itself use run_voucherd
// (test_db.hpp), which also controls its environment.
#include <string>
#include <vector>

namespace voucherd::test {

struct program_result {
  int exit_code = -1;  // 128+signal if killed; -1 when it could not be started
  std::string out;
  std::string err;
};

// argv[0] is looked up in PATH; stdin is /dev/null. Waits for the exit.
program_result run_program(const std::vector<std::string>& argv);

}  // namespace voucherd::test
