// The systemd unit in scripts/voucherd-worker.service (issue 9, "the worker
// as a service"): systemd-analyze verify accepts it without a complaint, it
// does not restart on the exits a restart cannot fix, and the command it
// starts, with the URL handed over as a credential file, serves a ready
// worker.
#include <doctest/doctest.h>

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "support/files.hpp"
#include "support/http_client.hpp"
#include "support/test_db.hpp"

using namespace voucherd::test;
using namespace std::chrono_literals;

namespace http = boost::beast::http;

namespace {

const std::string k_unit = std::string{VOUCHERD_SOURCE_DIR} + "/scripts/voucherd-worker.service";

// The value of the first `key=` line of the unit.
std::string unit_value(const std::string& unit, const std::string& key) {
  std::smatch m;
  const std::regex line{"(^|\\n)" + key + "=([^\\n]*)"};
  return std::regex_search(unit, m, line) ? m[2].str() : "";
}

std::vector<std::string> words(const std::string& text) {
  std::istringstream in{text};
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

}  // namespace

TEST_CASE("systemd-analyze verify accepts the unit, with no warning") {
  const std::string unit = read_file(k_unit);
  REQUIRE_MESSAGE(!unit.empty(), k_unit);
  // verify checks that ExecStart's binary exists: point it at this build's.
  const auto dir = temp_path("unit");
  std::filesystem::create_directories(dir);
  const auto copy = dir + "/voucherd-worker.service";
  std::ofstream{copy} << std::regex_replace(unit, std::regex{"/usr/local/bin/voucherd"}, voucherd_bin());
  const auto out = dir + "/verify.out";
  const int rc = std::system(("systemd-analyze verify '" + copy + "' >'" + out + "' 2>&1").c_str());
  const std::string said = read_file(out);
  CHECK_MESSAGE(rc == 0, said);
  CHECK_MESSAGE(said.empty(), "no warning either: " << said);
  std::filesystem::remove_all(dir);
}

TEST_CASE("the unit does not restart a worker on a usage or configuration error") {
  const std::string unit = read_file(k_unit);
  const auto no_restart = words(unit_value(unit, "RestartPreventExitStatus"));
  CHECK(std::find(no_restart.begin(), no_restart.end(), "64") != no_restart.end());
  CHECK(std::find(no_restart.begin(), no_restart.end(), "78") != no_restart.end());
  CHECK(unit_value(unit, "Restart") == "on-failure");
  CHECK_MESSAGE(unit.find("--database-url ") == std::string::npos, "the URL never goes through argv");
}

TEST_CASE("the unit's command, given the URL as a credential file, runs a ready worker") {
  test_database db;
  db.make_campaign("signup", 3);
  const std::string unit = read_file(k_unit);
  auto argv = words(unit_value(unit, "ExecStart"));
  REQUIRE(argv.size() >= 2);
  REQUIRE(argv[0] == "/usr/local/bin/voucherd");
  argv.erase(argv.begin());
  // The unit's own port may be taken on a test machine: any free one.
  for (auto& a : argv)
    if (a == "127.0.0.1:8080") a = "127.0.0.1:0";
  // LoadCredential + Environment=VOUCHERD_DATABASE_URL_FILE=%d/database-url.
  const auto credentials = temp_path("credentials");
  std::filesystem::create_directories(credentials);
  std::ofstream{credentials + "/database-url"} << db.url() << "\n";
  const std::string env_line = unit_value(unit, "Environment");
  REQUIRE(env_line == "VOUCHERD_DATABASE_URL_FILE=%d/database-url");

  const auto log = temp_path("unit-worker");
  const int pid = spawn_voucherd(argv, {}, log,
                                 {{"VOUCHERD_DATABASE_URL_FILE", credentials + "/database-url"},
                                  {"VOUCHERD_CAMPAIGN", "signup"}});
  const auto port = wait_for_http_port(log, pid, 20s);
  REQUIRE_MESSAGE(port.has_value(), read_file(log));
  const auto ready = http_call(*port, http::verb::get, "/readyz");
  CHECK_MESSAGE(ready.status == 200, ready.body);
  ::kill(pid, SIGTERM);
  CHECK(wait_exit(pid) == 0);
  std::filesystem::remove_all(credentials);
}
