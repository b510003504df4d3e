// story: the README's first command. Replays the story of SPEC section 1 on
// the configured database, through the daemon: a campaign with two codes,
// employees 1 and 2 imported at the same moment as two messages on the
// Postgres queue, two `voucherd worker` processes consuming it, their
// notifications delivered by the log sink; then who owns which code and who
// was told which.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "cli/commands.hpp"
#include "common/failure.hpp"
#include "db/migrator.hpp"
#include "db/session.hpp"
#include "pool/campaign.hpp"
#include "pool/code_import.hpp"
#include "source/pg_queue_source.hpp"
#include "sql_catalog.hpp"

extern char** environ;

namespace voucherd::cli {

namespace {

std::string self_exe() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw voucherd_error{failure_kind::internal, "cannot find my own executable"};
  return std::string(buf, static_cast<std::size_t>(n));
}

pid_t spawn(const std::vector<std::string>& argv) {
  std::vector<char*> raw;
  for (const auto& s : argv) raw.push_back(const_cast<char*>(s.c_str()));
  raw.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, raw[0], nullptr, nullptr, raw.data(), environ) != 0)
    throw voucherd_error{failure_kind::internal, "cannot start a worker process"};
  return pid;
}

}  // namespace

int run_story(const args& a) {
  std::string url_flag;
  po::options_description desc{"voucherd story: replay the story on this database"};
  add_common(desc, url_flag);
  po::variables_map vm;
  if (!parse(a, "voucherd story", desc, {}, vm)) return k_exit_ok;
  const auto url = resolve_common(url_flag).database_url;
  db_session db{url};
  apply_migrations(db.conn(), embedded_migrations());

  const auto stamp = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
  const std::string campaign = fmt::format("signup-{}", stamp);
  create_campaign(db.conn(), {campaign, "", ""});
  std::istringstream codes{"BV1LN2KJ\nASXKKQRG\n"};
  import_codes(db.conn(), campaign, codes);
  say(fmt::format("campaign {} has codes BV1LN2KJ and ASXKKQRG; employees 1 and 2 are imported "
                  "at the same moment: two messages on the Postgres queue, two worker daemons, "
                  "notifications through the log sink (on stderr)", campaign));
  const auto ids = enqueue_messages(
      db.conn(), {fmt::format(R"({{"user_id":"1","campaign":"{}"}})", campaign),
                  fmt::format(R"({{"user_id":"2","campaign":"{}"}})", campaign)});

  const auto exe = self_exe();
  std::vector<pid_t> workers;
  for (int i = 0; i < 2; ++i) {
    std::vector<std::string> argv{exe, "worker", "--source", "pg", "--concurrency", "1", "--notify", "log"};
    if (!url.empty()) argv.insert(argv.end(), {"--database-url", url});
    workers.push_back(spawn(argv));
  }
  // Wait until both messages are done and both owners notified (or give up
  // after k_story_timeout and show what happened).
  constexpr auto k_story_timeout = std::chrono::seconds{30};
  const auto deadline = std::chrono::steady_clock::now() + k_story_timeout;
  const auto id_list = fmt::format("{{{},{}}}", ids[0], ids[1]);
  for (;;) {
    pqxx::read_transaction progress{db.conn()};
    const auto row = exec(progress, sql::worker_story_progress, campaign, id_list)[0];
    if (row["pending"].as<int>() == 0 && row["unsent"].as<int>() == 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      say("the workers did not finish in time; showing what happened so far");
      break;
    }
    progress.commit();
    std::this_thread::sleep_for(std::chrono::milliseconds{100});
  }
  for (pid_t pid : workers) kill(pid, SIGTERM);
  for (pid_t pid : workers) {
    int status = 0;
    waitpid(pid, &status, 0);
  }

  pqxx::read_transaction txn{db.conn()};
  auto rows = exec(txn, sql::story_table, campaign, std::string{"1\n2"});
  std::printf("\n| user | owns     | was told | ok |\n|------|----------|----------|----|\n");
  for (const auto& r : rows) {
    const std::string owns = r["owns"].is_null() ? "-" : r["owns"].c_str();
    const std::string told = r["told"].is_null() ? "-" : r["told"].c_str();
    std::printf("| %-4s | %-8s | %-8s | %-2s |\n", r["user_id"].c_str(), owns.c_str(), told.c_str(),
                owns == told && owns != "-" ? "ok" : "NO");
  }
  std::fflush(stdout);
  return k_exit_ok;
}

}  // namespace voucherd::cli
