// Exit codes an adapter can act on (issue 9, point 5): a set-up that no retry
// can fix (unknown database or role, a schema nobody migrated or an older
// voucherd migrated) exits 78 with what to do, from the one-shot commands
// and from the worker at start-up; a database that is only away stays 75
// for a command, and a worker waits for it. /readyz says why it is not
// ready.
#include <doctest/doctest.h>

#include <signal.h>

#include <fstream>

#include <fmt/format.h>

#include "support/files.hpp"
#include "support/http_client.hpp"
#include "support/test_db.hpp"
#include "support/wait.hpp"

using namespace voucherd::test;
using namespace std::chrono_literals;

namespace http = boost::beast::http;

namespace {

constexpr int k_exit_config = 78;
constexpr int k_exit_transient = 75;

// The admin URL with another database or role.
std::string url_with(const std::string& role, const std::string& database) {
  const std::string admin = admin_url();  // postgresql://postgres@127.0.0.1:PORT/postgres
  const auto at = admin.find('@');
  const auto slash = admin.rfind('/');
  return "postgresql://" + role + admin.substr(at, slash - at) + "/" + database;
}

// Runs a worker to its exit, or kills it after `patience`: its exit code
// (-1 when it had to be killed) and its log.
struct worker_run {
  int exit_code = -1;
  std::string log;
};
worker_run run_worker_briefly(const std::vector<std::string>& args, std::chrono::seconds patience = 20s) {
  const auto out_path = temp_path("config-exit-worker-out");
  const auto log_path = temp_path("config-exit-worker-log");
  const int pid = spawn_voucherd(args, out_path, log_path);
  worker_run run;
  if (wait_until([&] { return !still_running(pid); }, patience)) {
    run.exit_code = wait_exit(pid);
  } else {
    ::kill(pid, SIGKILL);
    wait_exit(pid);
  }
  run.log = read_file(log_path) + read_file(out_path);
  return run;
}

}  // namespace

TEST_CASE("an unknown database or role is a configuration error: exit 78 with what to check, never 75") {
  struct row {
    const char* what;
    std::string url;
    const char* says;
  };
  for (const auto& r : {row{"unknown database", url_with("postgres", "vd_no_such_database"), "database name"},
                        row{"unknown role", url_with("vd_no_such_role", "postgres"), "role"}}) {
    CAPTURE(r.what);
    const auto claim = run_voucherd({"claim", "--campaign", "signup", "--user", "1", "--database-url", r.url});
    CHECK_MESSAGE(claim.exit_code == k_exit_config, claim.err);
    CHECK_MESSAGE(claim.err.find(r.says) != std::string::npos, "says what to check: " << claim.err);
    const auto stats = run_voucherd({"stats", "--campaign", "signup", "--database-url", r.url});
    CHECK_MESSAGE(stats.exit_code == k_exit_config, stats.err);

    const auto worker = run_worker_briefly({"worker", "--source", "stdin", "--campaign", "signup", "--database-url", r.url});
    CHECK_MESSAGE(worker.exit_code == k_exit_config, "the worker stops at start-up instead of retrying: " << worker.log);
    CHECK_MESSAGE(worker.log.find(r.says) != std::string::npos, worker.log);
  }
}

TEST_CASE("a URL that does not parse is a configuration error, and its password stays out of the message") {
  // libpq's reasons quote the URL: "missing \"=\" after \"...\"" the rest
  // of it, several URI errors all of it. Before 2026-11-28 voucherd passed
  // them on (the password included, even one read from --database-url-file)
  // and exited 64.
  const std::string secret = "s3cret-pw";
  for (const std::string& url : {"postgres:/postgres:" + secret + "@127.0.0.1:5432/db",
                                "postgresql://postgres:" + secret + "@127.0.0.1:5432/db?bogus=1",
                                "postgresql://postgres:" + secret + "@[::1/db",
                                // a quote inside what libpq quotes (found by a review of the first fix)
                                "postgresql://postgres:" + secret + "@[::1]\"/db",
                                "postgresql://postgres:se\"" + secret + "@[::1/db"}) {
    CAPTURE(url);
    const auto given = run_voucherd({"stats", "--campaign", "signup", "--database-url", url});
    CHECK_MESSAGE(given.exit_code == k_exit_config, given.err);
    CHECK_MESSAGE(given.err.find("cannot read the database URL") != std::string::npos, given.err);
    CHECK_MESSAGE(given.err.find(secret) == std::string::npos, given.err);
    const auto file = temp_path("config-exit-url");
    std::ofstream{file} << url << "\n";
    const auto from_file = run_voucherd({"claim", "--campaign", "signup", "--user", "1", "--database-url-file", file});
    CHECK_MESSAGE(from_file.exit_code == k_exit_config, from_file.err);
    CHECK_MESSAGE(from_file.err.find(secret) == std::string::npos, from_file.err);
    const auto worker = run_worker_briefly({"worker", "--source", "stdin", "--campaign", "signup", "--database-url", url});
    CHECK_MESSAGE(worker.exit_code == k_exit_config, worker.log);
    CHECK_MESSAGE(worker.log.find(secret) == std::string::npos, worker.log);
  }
}

TEST_CASE("a database without the schema, or with an older one, says to run voucherd migrate: exit 78") {
  test_database bare{false};
  const auto claim = run_voucherd({"claim", "--campaign", "signup", "--user", "1", "--database-url", bare.url()});
  CHECK_MESSAGE(claim.exit_code == k_exit_config, claim.err);
  CHECK_MESSAGE(claim.err.find("voucherd migrate") != std::string::npos, claim.err);

  const auto worker =
      run_worker_briefly({"worker", "--source", "stdin", "--campaign", "signup", "--database-url", bare.url()});
  CHECK_MESSAGE(worker.exit_code == k_exit_config, worker.log);
  CHECK_MESSAGE(worker.log.find("voucherd migrate") != std::string::npos, worker.log);
  CHECK_MESSAGE(worker.log.find("worker starting") == std::string::npos, "nothing started: " << worker.log);

  // An older voucherd migrated this one: its newest migration is not applied.
  test_database older;
  older.make_campaign("signup", 3);
  const std::string newest = older.scalar("SELECT max(name) FROM voucherd_migration");
  older.scalar(fmt::format("DELETE FROM voucherd_migration WHERE name = '{}' RETURNING name", newest));
  const auto stale = run_worker_briefly({"worker", "--source", "stdin", "--campaign", "signup", "--database-url", older.url()});
  CHECK_MESSAGE(stale.exit_code == k_exit_config, stale.log);
  CHECK_MESSAGE(stale.log.find(newest) != std::string::npos, "names what is missing: " << stale.log);
  CHECK_MESSAGE(stale.log.find("voucherd migrate") != std::string::npos, stale.log);

  // The one-shot commands check it too. Before 2026-11-28 they ran on the
  // older schema: claim, import and stats as if nothing were missing,
  // enqueue with an internal error (70) about a column.
  const auto before = older.scalar(
      "SELECT concat_ws('/', (SELECT count(*) FROM voucher_item), (SELECT count(*) FROM voucher_item WHERE user_id "
      "IS NOT NULL), (SELECT count(*) FROM message_queue))");
  const std::vector<std::pair<std::vector<std::string>, std::string>> commands{
      {{"claim", "--campaign", "signup", "--user", "1"}, ""},
      {{"claim-batch", "--campaign", "signup", "-"}, "u1\n"},
      {{"import", "--campaign", "signup", "-"}, "NEWCODE1\n"},
      {{"enqueue", "--source", "pg", "--campaign", "signup", "-"}, "{\"user_id\":\"1\"}\n"},
      {{"stats", "--campaign", "signup"}, ""}};
  for (auto [args, input] : commands) {
    CAPTURE(args.front());
    args.insert(args.end(), {"--database-url", older.url()});
    const auto r = run_voucherd(args, input);
    CHECK_MESSAGE(r.exit_code == k_exit_config, r.err);
    CHECK_MESSAGE(r.err.find(newest) != std::string::npos, r.err);
  }
  CHECK(older.scalar("SELECT concat_ws('/', (SELECT count(*) FROM voucher_item), (SELECT count(*) FROM voucher_item "
                     "WHERE user_id IS NOT NULL), (SELECT count(*) FROM message_queue))") == before);
}

TEST_CASE("a database that is only away stays transient: claim exits 75, the worker waits for it") {
  const std::string nowhere = "postgresql://postgres@127.0.0.1:1/postgres";
  const auto claim = run_voucherd({"claim", "--campaign", "signup", "--user", "1", "--database-url", nowhere});
  CHECK_MESSAGE(claim.exit_code == k_exit_transient, claim.err);

  const auto log_path = temp_path("config-exit-away");
  const int pid = spawn_voucherd({"worker", "--source", "pg", "--campaign", "signup", "--database-url", nowhere},
                                 {}, log_path);
  CHECK_MESSAGE(!wait_until([&] { return !still_running(pid); }, 3s), "still waiting for the database: " << read_file(log_path));
  ::kill(pid, SIGTERM);
  wait_exit(pid);
}

TEST_CASE("/readyz says why the worker is not ready") {
  test_database db;
  db.make_campaign("signup", 3);
  const auto log_path = temp_path("config-exit-readyz");
  const int pid = spawn_voucherd(
      {"worker", "--source", "pg", "--campaign", "signup", "--http", "127.0.0.1:0", "--database-url", db.url()},
      {}, log_path);
  const auto port = wait_for_http_port(log_path, pid, 20s);
  REQUIRE_MESSAGE(port.has_value(), read_file(log_path));
  CHECK(http_call(*port, http::verb::get, "/readyz").status == 200);

  const std::string newest = db.scalar("SELECT max(name) FROM voucherd_migration");
  db.scalar(fmt::format("DELETE FROM voucherd_migration WHERE name = '{}' RETURNING name", newest));
  // A probe's answer is reused for a second (shared_readiness): the change
  // shows within a few.
  http_reply stale;
  CHECK_MESSAGE(wait_until([&] { return (stale = http_call(*port, http::verb::get, "/readyz")).status == 503; }, 10s),
                stale.body);
  CHECK_MESSAGE(stale.body.find("voucherd migrate") != std::string::npos, stale.body);
  CHECK_MESSAGE(stale.body.find(newest) != std::string::npos, stale.body);

  ::kill(pid, SIGTERM);
  CHECK(wait_exit(pid) == 0);
}
