// The HTTP surface end to end, through the real daemon: `voucherd worker
// --http 127.0.0.1:0 --notify webhook:URL` answers each outcome with its
// status code, its /metrics agree with the database after a run, the
// notifications of its claims reach the webhook, and SIGTERM stops it with 0.
#include <doctest/doctest.h>

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <pqxx/pqxx>

#include "notify_webhook_receiver.hpp"
#include "support/files.hpp"
#include "support/http_client.hpp"
#include "support/json_field.hpp"
#include "support/prometheus.hpp"
#include "support/run_program.hpp"
#include "support/test_ca.hpp"
#include "support/test_db.hpp"
#include "support/wait.hpp"

using namespace voucherd;
using namespace voucherd::test;
using namespace std::chrono_literals;

namespace http = boost::beast::http;

namespace {

// What an operator would put in the token file (`openssl rand -hex 32`).
constexpr const char* k_token = "2f6b7c0e9d1a4b3c8e5f60718293a4b5c6d7e8f901a2b3c4d5e6f708192a3b4c";

std::string write_token_file() {
  const auto path = temp_path("http-token");
  std::ofstream{path} << k_token << "\n";
  return path;
}

// curl as an operator runs it: prints "<status>" (000 when there was no answer).
program_result curl(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv);
}

std::vector<std::string> claim_by_curl(const std::string& url, const std::string& user,
                                       const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args{"-X", "POST", "-H", "Content-Type: application/json",
                                "-d", fmt::format(R"({{"user_id":"{}"}})", user)};
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back(url + "/v1/claims");
  return args;
}

// A worker on the pg source with HTTP on a free port, for a new campaign of
// `codes` codes; its log goes to err_path.
struct http_worker {
  int pid = -1;
  std::uint16_t port = 0;
  std::string err_path;
};
http_worker start_http_worker(const test_database& db, const std::string& campaign, int codes) {
  db.make_campaign(campaign, codes);
  http_worker w;
  w.err_path = temp_path("http-" + campaign);
  w.pid = spawn_voucherd({"worker", "--source", "pg", "--http", "127.0.0.1:0", "--campaign", campaign,
                          "--database-url", db.url()},
                         {}, w.err_path);
  const auto port = wait_for_http_port(w.err_path, w.pid, 30s);
  REQUIRE_MESSAGE(port.has_value(), read_file(w.err_path));
  w.port = *port;
  return w;
}

// 32 clients posting a new user each, over and over, until stop() or a
// refused connection (the worker stopped accepting): every reply by user.
class claim_flood {
 public:
  claim_flood(std::uint16_t port, std::string prefix) {
    for (int t = 0; t < 32; ++t)
      clients_.emplace_back([this, port, prefix, t] {
        for (int n = 0; !done_; ++n) {
          const auto user = fmt::format("{}{}-{}", prefix, t, n);
          auto reply = post_claim(port, fmt::format(R"({{"user_id":"{}"}})", user));
          const bool gone = reply.status == 0;
          ++answered_;
          std::lock_guard lock{mutex_};
          replies_.emplace(user, std::move(reply));
          if (gone) return;
        }
      });
  }
  ~claim_flood() { stop(); }
  int answered() const { return answered_; }
  void stop() {
    done_ = true;
    for (auto& c : clients_)
      if (c.joinable()) c.join();
  }
  // After stop(): every user who owns a voucher was answered 200 with its
  // code, and every 200 was such a user; replies are counted by status.
  // With `unknown_allowed`, an owner may instead have been answered 503
  // saying the claim may have gone through (its tries kept losing the
  // connection until its deadline): true, and the client retries.
  std::map<std::string, int> check_every_owner_was_told(const test_database& db, bool unknown_allowed = false) const {
    std::map<std::string, int> statuses;
    for (const auto& [user, reply] : replies_) ++statuses[std::to_string(reply.status)];
    CAPTURE(fmt::format("{}", fmt::join(statuses, ", ")));
    long told = 0;
    auto conn = db.connect();
    pqxx::work audit{*conn};
    for (const auto& row : audit.exec("SELECT user_id, code FROM voucher_item WHERE user_id IS NOT NULL")) {
      const std::string user = row[0].c_str(), code = row[1].c_str();
      const auto it = replies_.find(user);
      REQUIRE_MESSAGE(it != replies_.end(), user, " owns a voucher nobody asked for");
      if (unknown_allowed && it->second.status == 503 &&
          it->second.body.find("unknown whether it went through") != std::string::npos)
        continue;
      CHECK_MESSAGE((it->second.status == 200 && json_field(it->second.body, "code") == code), user, " owns ", code,
                    " but was answered ", it->second.status, " ", it->second.body, it->second.error);
      ++told;
    }
    CHECK(told == statuses["200"]);
    return statuses;
  }
  const std::map<std::string, http_reply>& replies() const { return replies_; }

 private:
  std::mutex mutex_;
  std::map<std::string, http_reply> replies_;
  std::atomic<int> answered_{0};
  std::atomic<bool> done_{false};
  std::vector<std::thread> clients_;
};

}  // namespace

TEST_CASE("voucherd worker --http answers each outcome, its metrics match the database, its claims are notified") {
  test_database db;
  db.make_campaign("signup", 10);
  webhook_receiver receiver{[](const std::string&, int) { return webhook_receiver::answer{200}; }};
  const auto log_path = temp_path("http-worker");
  const int pid = spawn_voucherd({"worker", "--source", "pg", "--campaign", "signup", "--concurrency", "2", "--http",
                                  "127.0.0.1:0", "--notify", "webhook:" + receiver.url(), "--database-url", db.url()},
                                 {}, log_path);
  const auto found = wait_for_http_port(log_path, pid, 20s);
  REQUIRE_MESSAGE(found.has_value(), "the worker listens within 20 s: " << read_file(log_path));
  const auto port = *found;

  CHECK_MESSAGE(http_call(port, http::verb::get, "/healthz").status == 200, "healthz");
  auto ready = http_call(port, http::verb::get, "/readyz");
  CHECK_MESSAGE(ready.status == 200, "readyz with the database up: " << ready.body);

  // 14 users for 10 codes, with repeats, rejects and malformed bodies.
  std::map<unsigned, int> statuses;
  for (int i = 1; i <= 14; ++i) {
    auto r = post_claim(port, fmt::format(R"({{"user_id": "user-{}", "message_id": "m-{}"}})", i, i));
    ++statuses[r.status];
    CHECK_MESSAGE((r.status == 200 || r.status == 409), "claim " << i << ": " << r.status << " " << r.body);
    if (i <= 10) CHECK_MESSAGE(json_field(r.body, "status") == "claimed", "the first 10 users are claimed: " << r.body);
  }
  auto again = post_claim(port, R"({"user_id": "user-3", "message_id": "m-3-again"})");
  CHECK_MESSAGE(again.status == 200, again.body);
  CHECK_MESSAGE(again.body.find("already_claimed") != std::string::npos, again.body);
  auto unknown = post_claim(port, R"({"user_id": "user-99", "campaign": "no-such-campaign", "message_id": "m-99"})");
  CHECK_MESSAGE(unknown.status == 422, unknown.body);
  auto no_user = post_claim(port, R"({"campaign": "signup"})");
  CHECK_MESSAGE(no_user.status == 422, no_user.body);
  auto malformed = post_claim(port, "{not json");
  CHECK_MESSAGE(malformed.status == 400, malformed.body);
  auto huge = post_claim(port, std::string(100 * 1024, 'x'));
  CHECK_MESSAGE(huge.status == 413, huge.body);
  CHECK_MESSAGE(statuses[200] == 10, "10 claimed");
  CHECK_MESSAGE(statuses[409] == 4, "4 sold out");

  // Every owner's notification reaches the webhook.
  const bool notified = receiver.wait_until(
      [](const auto& seen) {
        std::set<std::string> keys;
        for (const auto& r : seen) keys.insert(r.header_key);
        return keys.size() >= 10;
      },
      30s);
  CHECK_MESSAGE(notified, "10 notifications within 30 s, got " << receiver.requests().size());

  auto metrics = http_call(port, http::verb::get, "/metrics");
  CHECK_MESSAGE(metrics.content_type.rfind("text/plain; version=0.0.4", 0) == 0, metrics.content_type);
  const auto& text = metrics.body;
  auto outcomes = [&](const char* status) {
    return static_cast<double>(
        db.count(fmt::format("SELECT count(*) FROM message_outcome WHERE status = '{}'", status)));
  };
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="claimed"})") ==
                    db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL"),
                text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="claimed"})") == outcomes("claimed"), text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="already_claimed"})") == outcomes("already_claimed"), text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="sold_out"})") == outcomes("sold_out"), text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="rejected"})") >= 1,
                "the unknown campaign's rejection is counted: " << text);

  ::kill(pid, SIGTERM);
  CHECK_MESSAGE(wait_exit(pid) == 0, "SIGTERM exits 0: " << read_file(log_path));
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'sent'") == 10,
                "all 10 notifications marked sent");
  std::filesystem::remove(log_path);
}

TEST_CASE("with the database away, POST /v1/claims answers 503 at once instead of keeping the client waiting") {
  const auto err_path = temp_path("http-db-down");
  // Nothing listens on port 9: the database is away for the whole run.
  const int pid = spawn_voucherd({"worker", "--source", "pg", "--http", "127.0.0.1:0", "--campaign", "away",
                                  "--database-url", "postgresql://postgres@127.0.0.1:9/away"},
                                 {}, err_path);
  const auto port = wait_for_http_port(err_path, pid, 30s);
  REQUIRE_MESSAGE(port.has_value(), "the worker serves HTTP without a database: ", read_file(err_path));
  const auto reply = http_call(*port, http::verb::post, "/v1/claims", R"({"user_id":"1"})", 30s);
  CHECK_MESSAGE(reply.status == 503, "a transient answer, got ", reply.status, " ", reply.body, reply.error);
  ::kill(pid, SIGTERM);
  CHECK(wait_exit(pid) == 0);
  std::filesystem::remove(err_path);
}

TEST_CASE("SIGTERM under HTTP load: every claim that committed was answered 200 with its code, the rest 503 or refused") {
  // Until 2026-11-28 stop() closed every connection at once: a helper's
  // flood left 16 users owning a voucher whose client saw only a dropped
  // connection, and 48 waiting requests got no answer at all.
  test_database db;
  const auto w = start_http_worker(db, "closing", 50000);
  claim_flood flood{w.port, "c"};  // until refused: the worker stopped accepting
  CHECK_MESSAGE(wait_until([&] { return flood.answered() >= 2000; }, 60s), "under load before the signal");
  ::kill(w.pid, SIGTERM);
  CHECK_MESSAGE(wait_exit(w.pid) == 0, read_file(w.err_path));
  flood.stop();
  flood.check_every_owner_was_told(db);
  for (const auto& [user, reply] : flood.replies())
    CHECK_MESSAGE((reply.status == 200 || reply.status == 503 || reply.status == 0), user, ": ", reply.status);
  std::filesystem::remove(w.err_path);
}

TEST_CASE("claimers' connections terminated under HTTP load: every claim that committed was answered 200 with its code") {
  // pg_terminate_backend right after a COMMIT: the server answers the COMMIT,
  // then FATAL. Until 2026-11-28 the worker took the lost connection for a
  // failed claim and answered 503: a helper's run (32 clients, 4
  // terminations) left 25 users owning a voucher, notified of it, whose
  // client was told to retry later. A termination can also land between the
  // commit and its answer (seen behind PgBouncer): those requests are
  // claimed again, answering already_claimed with the code. Behind
  // PgBouncer the worker also exited 75 when its LISTEN connection died.
  test_database db;
  const auto w = start_http_worker(db, "cut", 100000);
  claim_flood flood{w.port, "k"};
  CHECK_MESSAGE(wait_until([&] { return flood.answered() >= 500; }, 60s), "under load before the first termination");
  auto admin = db.connect();
  long terminated = 0;
  for (int round = 0; round < 8; ++round) {
    pqxx::nontransaction kill{*admin};
    terminated += kill.exec1("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                             "AND backend_type = 'client backend'")[0]
                      .as<long>();
    std::this_thread::sleep_for(300ms);
  }
  const int before_end = flood.answered();
  CHECK_MESSAGE(wait_until([&] { return flood.answered() >= before_end + 500; }, 60s), "claims go on after the faults");
  flood.stop();
  ::kill(w.pid, SIGTERM);
  CHECK_MESSAGE(wait_exit(w.pid) == 0, read_file(w.err_path));
  CHECK(terminated > 0);
  // Behind a pooler the worker's own connection may outlive a server's.
  const auto log = read_file(w.err_path);
  if (!db.pooling().enabled)
    CHECK_MESSAGE(log.find("database connection restored") != std::string::npos, "the faults hit: " << log);
  flood.check_every_owner_was_told(db, true);
  for (const auto& [user, reply] : flood.replies())
    CHECK_MESSAGE((reply.status == 200 || reply.status == 503), user, ": ", reply.status);
  std::filesystem::remove(w.err_path);
}

TEST_CASE("worker --http 0.0.0.0 with a bearer token: POST /v1/claims is 401 without or with a wrong token and 200 "
          "with it; the probes stay open; the token is never logged") {
  test_database db;
  db.make_campaign("signup", 5);
  const auto token_file = write_token_file();
  const auto log_path = temp_path("http-token-worker");
  const int pid = spawn_voucherd({"worker", "--source", "pg", "--campaign", "signup", "--concurrency", "1", "--http",
                                  "0.0.0.0:0", "--http-token-file", token_file, "--database-url", db.url()},
                                 {}, log_path);
  const auto found = wait_for_http_port(log_path, pid, 20s);
  REQUIRE_MESSAGE(found.has_value(), "the worker listens beyond loopback with a token: " << read_file(log_path));
  const auto port = *found;
  const http_headers good{{"Authorization", std::string{"Bearer "} + k_token}};

  const auto none = post_claim(port, R"({"user_id":"u1"})");
  CHECK_MESSAGE(none.status == 401, none.status << " " << none.body << none.error);
  CHECK_MESSAGE(none.www_authenticate.rfind("Bearer", 0) == 0, "WWW-Authenticate: " << none.www_authenticate);
  const auto wrong = http_call(port, http::verb::post, "/v1/claims", R"({"user_id":"u1"})", k_http_deadline,
                               {{"Authorization", "Bearer 0000000000000000000000000000000000000000000000000000000000000000"}});
  CHECK_MESSAGE(wrong.status == 401, wrong.status << " " << wrong.body);
  const auto basic = http_call(port, http::verb::post, "/v1/claims", R"({"user_id":"u1"})", k_http_deadline,
                               {{"Authorization", std::string{"Basic "} + k_token}});
  CHECK_MESSAGE(basic.status == 401, "another scheme with the same secret: " << basic.status);
  const auto right = http_call(port, http::verb::post, "/v1/claims", R"({"user_id":"u1"})", k_http_deadline, good);
  CHECK_MESSAGE(right.status == 200, right.status << " " << right.body);
  CHECK_MESSAGE(json_field(right.body, "status") == "claimed", right.body);
  CHECK_MESSAGE(db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == 1,
                "only the authorised request claimed");
  for (const char* probe : {"/healthz", "/readyz", "/metrics"})
    CHECK_MESSAGE(http_call(port, http::verb::get, probe).status == 200, probe << " stays open");

  const std::string base = fmt::format("http://127.0.0.1:{}", port);
  const auto curl_none = curl(claim_by_curl(base, "u2"));
  CHECK_MESSAGE(curl_none.out == "401", "curl without a token: " << curl_none.out << curl_none.err);
  const auto curl_good = curl(claim_by_curl(base, "u2", {"-H", std::string{"Authorization: Bearer "} + k_token}));
  CHECK_MESSAGE(curl_good.out == "200", "curl with the token: " << curl_good.out << curl_good.err);
  CHECK_MESSAGE(curl({base + "/healthz"}).out == "200", "curl /healthz without a token");

  ::kill(pid, SIGTERM);
  CHECK_MESSAGE(wait_exit(pid) == 0, "SIGTERM exits 0: " << read_file(log_path));
  const auto log = read_file(log_path);
  CHECK_MESSAGE(log.find(k_token) == std::string::npos, "the token is not in the log: " << log);
  CHECK_MESSAGE(log.find(R"("auth":"bearer")") != std::string::npos, "the log says the endpoint is guarded: " << log);
  std::filesystem::remove(log_path);
  std::filesystem::remove(token_file);
}

TEST_CASE("worker --http-tls-cert/--http-tls-key serves HTTPS that curl --cacert verifies, keeps connections alive, "
          "enforces the token, and notifies an https webhook trusted through --webhook-ca-file") {
  test_database db;
  db.make_campaign("signup", 5);
  const test_ca ca;
  webhook_receiver receiver{[](const std::string&, int) { return webhook_receiver::answer{200}; }, ca.server_cert(),
                            ca.server_key()};
  const auto token_file = write_token_file();
  const auto log_path = temp_path("https-worker");
  const int pid = spawn_voucherd({"worker", "--source", "pg", "--campaign", "signup", "--concurrency", "1", "--http",
                                  "0.0.0.0:0", "--http-token-file", token_file, "--http-tls-cert", ca.server_cert(),
                                  "--http-tls-key", ca.server_key(), "--notify", "webhook:" + receiver.url(),
                                  "--webhook-ca-file", ca.ca_cert(), "--database-url", db.url()},
                                 {}, log_path);
  const auto found = wait_for_http_port(log_path, pid, 20s);
  REQUIRE_MESSAGE(found.has_value(), "the worker listens: " << read_file(log_path));
  const std::string base = fmt::format("https://localhost:{}", *found);
  const std::vector<std::string> trust{"--cacert", ca.ca_cert()};

  const auto health = curl({"--cacert", ca.ca_cert(), base + "/healthz"});
  CHECK_MESSAGE(health.out == "200", "curl --cacert /healthz: " << health.out << health.err);
  const auto untrusted = curl({base + "/healthz"});
  CHECK_MESSAGE(untrusted.exit_code == 60, "curl without the CA refuses the certificate: " << untrusted.exit_code
                                                                                            << untrusted.err);
  const auto plain = http_call(*found, http::verb::get, "/healthz");
  CHECK_MESSAGE(plain.status == 0, "plain HTTP on the TLS port gets no answer: " << plain.status);

  auto with_trust = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), trust.begin(), trust.end());
    return extra;
  };
  const auto none = curl(claim_by_curl(base, "u1", trust));
  CHECK_MESSAGE(none.out == "401", "no token over TLS: " << none.out << none.err);
  const auto wrong = curl(claim_by_curl(base, "u1", with_trust({"-H", "Authorization: Bearer not-the-token-at-all"})));
  CHECK_MESSAGE(wrong.out == "401", "wrong token over TLS: " << wrong.out << wrong.err);
  const auto right = curl(claim_by_curl(base, "u1", with_trust({"-H", std::string{"Authorization: Bearer "} + k_token})));
  CHECK_MESSAGE(right.out == "200", "the token over TLS: " << right.out << right.err);

  // Two requests in one curl run share one TLS connection (keep-alive).
  const auto twice = run_program({"curl", "-sS", "--cacert", ca.ca_cert(), "-o", "/dev/null", "-o", "/dev/null", "-w",
                                  "%{http_code}:%{num_connects} ", base + "/healthz", base + "/metrics"});
  CHECK_MESSAGE(twice.out == "200:1 200:0 ", "the second request reused the connection: " << twice.out << twice.err);

  const bool notified = receiver.wait_until([](const auto& seen) { return seen.size() >= 1; }, 30s);
  CHECK_MESSAGE(notified, "the claim's notification reached the https webhook: " << read_file(log_path));

  ::kill(pid, SIGTERM);
  CHECK_MESSAGE(wait_exit(pid) == 0, "SIGTERM exits 0: " << read_file(log_path));
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'sent'") == 1, "marked sent");
  const auto log = read_file(log_path);
  CHECK_MESSAGE(log.find(k_token) == std::string::npos, "the token is not in the log");
  CHECK_MESSAGE(log.find(R"("tls":true)") != std::string::npos, log);
  std::filesystem::remove(log_path);
  std::filesystem::remove(token_file);
}
