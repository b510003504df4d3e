// TLS to Postgres and the password (issue 9, point 3): against the second
// throwaway server of scripts/test (pg_start_tls: ssl = on, a server
// certificate from a CA made at test time, hostssl + scram-sha-256 only),
// a voucherd_worker login works over sslmode=verify-full; a wrong CA, a
// wrong host name, no TLS or a wrong password is exit 78 with a message
// that says which; and the password, given through PGPASSWORD or
// --database-url-file, never shows in a message or a log.
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "common/failure.hpp"
#include "support/files.hpp"
#include "support/json_field.hpp"
#include "support/test_db.hpp"
#include "support/wait.hpp"
#include "support/worker_login.hpp"
#include "worker_fixture.hpp"

using namespace voucherd;
using namespace voucherd::test;

namespace {

std::string required_env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v)
    throw std::runtime_error(fmt::format(
        "{} is not set: this test needs the TLS Postgres of scripts/test (scripts/common.sh pg_start_tls), "
        "which exports VOUCHERD_TEST_TLS_SOCKET, _PORT, _CA and _WRONG_CA",
        name));
  return v;
}

// The server of pg_start_tls, from the environment; a missing variable
// fails the test (CI always provides them), it never skips it.
struct tls_server {
  std::string socket = required_env("VOUCHERD_TEST_TLS_SOCKET");
  std::string port = required_env("VOUCHERD_TEST_TLS_PORT");
  std::string ca = required_env("VOUCHERD_TEST_TLS_CA");
  std::string wrong_ca = required_env("VOUCHERD_TEST_TLS_WRONG_CA");

  // The superuser over the Unix socket (trust): the schema owner.
  std::string owner(const std::string& db) const {
    return fmt::format("host={} port={} user=postgres dbname={}", socket, port, db);
  }
};

std::string random_text(const char* prefix) {
  static std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}{:012x}", prefix, rng() & 0xffffffffffffULL);
}

// A database on the TLS server, migrated by the binary under test as its
// owner, with one campaign; a voucherd_worker login with a password.
struct tls_pool {
  tls_server server;
  std::string name = random_text("vd_tls_");
  std::string campaign = "tls";
  std::string password = random_text("pw-Secr3t-");
  std::unique_ptr<worker_login> app;

  explicit tls_pool(int codes) {
    {
      pqxx::connection admin{server.owner("postgres")};
      pqxx::nontransaction tx{admin};
      tx.exec("CREATE DATABASE " + tx.quote_name(name));
    }
    auto r = run_voucherd({"migrate", "--database-url", server.owner(name)});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    r = run_voucherd({"campaign", "create", campaign, "--database-url", server.owner(name)});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    std::string codes_file;
    for (int i = 1; i <= codes; ++i) codes_file += fmt::format("TLS{:05d}\n", i);
    r = run_voucherd({"import", "--campaign", campaign, "-", "--database-url", server.owner(name)}, codes_file);
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    app = std::make_unique<worker_login>(server.owner("postgres"), password);
  }
  ~tls_pool() {
    app.reset();
    try {
      pqxx::connection admin{server.owner("postgres")};
      pqxx::nontransaction tx{admin};
      tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(name) + " WITH (FORCE)");
    } catch (...) {
    }
  }

  // The login's URL over TCP, without a password; `host` is the name the
  // certificate is checked against (the connection goes to 127.0.0.1).
  std::string url(const std::string& sslmode = "verify-full", const std::string& root = {},
                  const std::string& host = "localhost", const std::string& password_in_url = {}) const {
    const std::string user = password_in_url.empty() ? app->name() : app->name() + ":" + password_in_url;
    return fmt::format("postgresql://{}@{}:{}/{}?hostaddr=127.0.0.1&sslmode={}&sslrootcert={}", user, host, server.port,
                       name, sslmode, root.empty() ? server.ca : root);
  }
  std::map<std::string, std::string> pgpassword() const { return {{"PGPASSWORD", password}}; }

  std::int64_t count(const std::string& query) const {
    pqxx::connection c{server.owner(name)};
    pqxx::nontransaction tx{c};
    return tx.exec(query)[0][0].as<std::int64_t>();
  }
};

// A --database-url-file holding `url`, readable by its owner only.
struct url_file {
  std::string path = temp_path("tls-url");
  explicit url_file(const std::string& url) {
    std::ofstream{path} << url << "\n";
    ::chmod(path.c_str(), 0600);
  }
  ~url_file() { std::filesystem::remove(path); }
};

// Runs a stdin worker that has one message to claim until its log holds
// `needle` (or 30 s pass): whether it keeps retrying the connection or
// gives up at start-up, it is stopped then. Returns its log.
std::string worker_log_until(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
                             const std::string& needle) {
  const auto input = temp_path("tls-in");
  std::ofstream{input} << "{\"user_id\":\"u1\"}\n";
  const auto log = temp_path("tls-log");
  const int pid = spawn_voucherd(args, child_io{input, -1, "", log}, env);
  wait_until([&] { return read_file(log).find(needle) != std::string::npos; }, std::chrono::seconds{30});
  if (still_running(pid)) terminate_and_wait(pid, std::chrono::seconds{30});
  else wait_exit(pid);
  auto logged = read_file(log);
  std::filesystem::remove(input);
  std::filesystem::remove(log);
  return logged;
}

}  // namespace

TEST_CASE("claim, claim-batch, the stdin worker, notify and stats run over sslmode=verify-full as a voucherd_worker login") {
  tls_pool pool{50};
  const auto env = pool.pgpassword();
  const auto url = pool.url();

  auto r = run_voucherd({"claim", "--campaign", pool.campaign, "--user", "u1", "--database-url", url}, "", env);
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK(json_field(r.out, "status") == "claimed");
  r = run_voucherd({"claim-batch", "--campaign", pool.campaign, "-", "--database-url", url}, "u1\nu2\nu3\n", env);
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK(lines_of(r.out).size() == 3);

  std::string input;
  for (int i = 3; i <= 12; ++i) input += fmt::format("{{\"user_id\":\"u{}\",\"message_id\":\"s{}\"}}\n", i, i);
  r = run_voucherd({"worker", "--source", "stdin", "--campaign", pool.campaign, "--database-url", url}, input, env);
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  const auto outcomes = lines_of(r.out);
  REQUIRE(outcomes.size() == 10);
  CHECK(json_field(outcomes[0], "status") == "already_claimed");
  for (std::size_t i = 1; i < outcomes.size(); ++i) CHECK(json_field(outcomes[i], "status") == "claimed");

  // The password from a URL file instead of the environment.
  url_file file{pool.url("verify-full", {}, "localhost", pool.password)};
  r = run_voucherd({"notify", "--once", "--notify", "log", "--database-url-file", file.path});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  r = run_voucherd({"stats", "--campaign", pool.campaign}, "", {{"VOUCHERD_DATABASE_URL_FILE", file.path}});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK(json_field(r.out, "claimed") == "12");
  CHECK(json_field(r.out, "outbox_sent") == "12");

  // What voucherd's connections were: TLS, seen from the server.
  pqxx::connection seen{pool.url("verify-full", {}, "localhost", pool.password)};
  pqxx::nontransaction tx{seen};
  CHECK(tx.exec("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")[0][0].as<std::string>() == "true");
  CHECK(pool.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == 12);
}

TEST_CASE("a CA that did not sign the server's certificate, or a host name it does not name, exits 78 with the certificate message") {
  tls_pool pool{1};
  auto r = run_voucherd({"claim", "--campaign", pool.campaign, "--user", "u1", "--database-url",
                         pool.url("verify-full", pool.server.wrong_ca)},
                        "", pool.pgpassword());
  CHECK_MESSAGE(r.exit_code == k_exit_config, r.err);
  CHECK_MESSAGE(r.err.find("certificate verify failed") != std::string::npos, r.err);

  r = run_voucherd({"stats", "--campaign", pool.campaign, "--database-url",
                    pool.url("verify-full", {}, "voucherd.invalid")},
                   "", pool.pgpassword());
  CHECK_MESSAGE(r.exit_code == k_exit_config, r.err);
  CHECK_MESSAGE(r.err.find("does not match host name \"voucherd.invalid\"") != std::string::npos, r.err);
  CHECK_MESSAGE(r.err.find("sslrootcert") != std::string::npos, r.err);  // the hint

  const auto logged = worker_log_until({"worker", "--source", "stdin", "--campaign", pool.campaign, "--database-url",
                                        pool.url("verify-full", pool.server.wrong_ca)},
                                       pool.pgpassword(), "certificate verify failed");
  CHECK_MESSAGE(logged.find("certificate verify failed") != std::string::npos, logged);
  CHECK(pool.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == 0);
}

TEST_CASE("a connection without TLS is refused by the server: exit 78") {
  tls_pool pool{1};
  const auto r = run_voucherd({"claim", "--campaign", pool.campaign, "--user", "u1", "--database-url", pool.url("disable")},
                              "", pool.pgpassword());
  CHECK_MESSAGE(r.exit_code == k_exit_config, r.err);
  CHECK_MESSAGE(r.err.find("no encryption") != std::string::npos, r.err);
  CHECK(pool.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == 0);
}

TEST_CASE("a wrong password exits 78, and no password shows in the message (PGPASSWORD, URL file)") {
  tls_pool pool{1};
  const auto wrong = random_text("pw-Wr0ng-");
  auto r = run_voucherd({"claim", "--campaign", pool.campaign, "--user", "u1", "--database-url", pool.url()}, "",
                        {{"PGPASSWORD", wrong}});
  CHECK_MESSAGE(r.exit_code == k_exit_config, r.err);
  CHECK_MESSAGE(r.err.find("password authentication failed") != std::string::npos, r.err);
  CHECK_MESSAGE(r.err.find(wrong) == std::string::npos, r.err);

  url_file file{pool.url("verify-full", {}, "localhost", wrong)};
  for (std::vector<std::string> args : {std::vector<std::string>{"claim", "--campaign", pool.campaign, "--user", "u1"},
                                       {"stats", "--campaign", pool.campaign}}) {
    const auto command = args[0];
    args.insert(args.end(), {"--database-url-file", file.path});
    r = run_voucherd(args);
    CHECK_MESSAGE(r.exit_code == k_exit_config, command, ": ", r.err);
    CHECK_MESSAGE(r.err.find("password authentication failed") != std::string::npos, command, ": ", r.err);
    CHECK_MESSAGE(r.err.find(wrong) == std::string::npos, command, ": ", r.err);
    CHECK_MESSAGE(r.out.find(wrong) == std::string::npos, command, ": ", r.out);
  }

  // The right password in the file, and a failure of another kind (the CA).
  url_file right{pool.url("verify-full", pool.server.wrong_ca, "localhost", pool.password)};
  r = run_voucherd({"claim", "--campaign", pool.campaign, "--user", "u1", "--database-url-file", right.path});
  CHECK_MESSAGE(r.exit_code == k_exit_config, r.err);
  CHECK_MESSAGE(r.err.find(pool.password) == std::string::npos, r.err);
}

TEST_CASE("the worker's JSON logs hold no password: at start-up, and while it cannot connect") {
  tls_pool pool{5};
  {
    url_file file{pool.url("verify-full", {}, "localhost", pool.password)};
    const auto r = run_voucherd({"worker", "--source", "stdin", "--campaign", pool.campaign, "--notify", "log",
                                 "--database-url-file", file.path},
                                "{\"user_id\":\"u1\"}\n", {{"PGPASSWORD", "unused-" + pool.password}});
    CHECK_MESSAGE(r.exit_code == 0, r.err);
    CHECK_MESSAGE(r.err.find("worker starting") != std::string::npos, r.err);
    CHECK_MESSAGE(r.err.find(pool.password) == std::string::npos, r.err);
    CHECK_MESSAGE(r.out.find(pool.password) == std::string::npos, r.out);
  }

  // A wrong password: whether the worker retries or gives up at start-up,
  // what it logs names the failure and not the password.
  const auto wrong = random_text("pw-Wr0ng-");
  url_file file{pool.url("verify-full", {}, "localhost", wrong)};
  const auto logged = worker_log_until(
      {"worker", "--source", "stdin", "--campaign", pool.campaign, "--database-url-file", file.path}, {},
      "password authentication failed");
  CHECK_MESSAGE(logged.find("password authentication failed") != std::string::npos, logged);
  CHECK_MESSAGE(logged.find(wrong) == std::string::npos, logged);
}
