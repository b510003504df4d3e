// The outbox dispatcher through the webhook sink, against a real HTTP
// receiver on 127.0.0.1: retries with backoff, one idempotency key per claim,
// 'failed' after the last attempt (and visible in `voucherd stats`), SKIP
// LOCKED sharing between dispatchers, and the at-least-once window.
#include <doctest/doctest.h>

#include <signal.h>

#include <map>
#include <set>
#include <thread>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "claim/claim_core.hpp"
#include "common/failure.hpp"
#include "claim/metrics.hpp"
#include "notify/outbox_dispatcher.hpp"
#include "notify_webhook_receiver.hpp"
#include "support/test_ca.hpp"
#include "support/test_db.hpp"
#include "support/wait.hpp"

using namespace voucherd;
using namespace voucherd::test;

using namespace std::chrono_literals;

namespace {

using answer = webhook_receiver::answer;
answer fail_first_two(const std::string&, int seen_before) { return {seen_before < 2 ? 503u : 200u}; }
answer always_fail(const std::string&, int) { return {500}; }
answer always_accept(const std::string&, int) { return {200}; }

// Test settings: no waiting between attempts, so a pass per attempt.
notify_config fast_webhook(const webhook_receiver& receiver, int max_attempts = 5) {
  auto config = parse_notify_option("webhook:" + receiver.url(), "");
  config.max_attempts = max_attempts;
  config.backoff_base = 0ms;
  config.backoff_cap = 0ms;
  config.jitter = 0;
  config.webhook_timeout = 2000ms;
  config.poll_interval = 20ms;
  return config;
}

void claim_users(const test_database& db, int users, int first = 1) {
  blocking_claimer engine{db.url(), {}, db.pooling()};
  const std::string campaign = "signup";
  for (int i = first; i < first + users; ++i) {
    const auto outcome = engine.claim({campaign, fmt::format("user-{}", i), {}});
    REQUIRE_MESSAGE(outcome.status == claim_status::claimed, to_json_line(outcome));
  }
}

// Runs passes until nothing is pending, with a deadline instead of a sleep.
void drain_until_settled(const test_database& db, outbox_dispatcher& dispatcher) {
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (db.count("SELECT count(*) FROM notification_outbox WHERE status = 'pending'") > 0) {
    REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline, "the outbox did not settle within 30 s");
    dispatcher.drain_once();
  }
}

// Polls the outbox (with a deadline) until `sent` notifications are marked sent.
bool wait_for_sent(const test_database& db, std::int64_t sent) {
  return wait_until([&] { return db.count("SELECT count(*) FROM notification_outbox WHERE status = 'sent'") >= sent; },
                    20s);
}

std::int64_t stats_field(const test_database& db, const std::string& field) {
  auto r = run_voucherd({"stats", "--campaign", "signup", "--database-url", db.url()});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  return boost::json::parse(r.out).as_object().at(field).as_int64();
}

}  // namespace

TEST_CASE("a receiver that fails the first two attempts gets every notification, one key per claim") {
  test_database db;
  db.make_campaign("signup", 10);
  claim_users(db, 6);
  webhook_receiver receiver{fail_first_two};
  metrics registry;
  outbox_dispatcher dispatcher{db.url(), fast_webhook(receiver), registry, db.pooling()};
  drain_until_settled(db, dispatcher);

  const auto requests = receiver.requests();
  std::map<std::string, int> attempts_per_key, accepted_per_key;
  for (const auto& r : requests) {
    CHECK_MESSAGE(r.header_key == r.body.at("idempotency_key").as_string().c_str(),
                  "the Idempotency-Key header matches the body: " << r.header_key);
    ++attempts_per_key[r.header_key];
    if (r.status == 200) ++accepted_per_key[r.header_key];
  }
  CHECK_MESSAGE(attempts_per_key.size() == 6, "one idempotency key per claim, got " << attempts_per_key.size());
  for (const auto& [key, n] : attempts_per_key) {
    CHECK_MESSAGE(n == 3, key << " was attempted " << n << " times, expected 2 failures + 1 success");
    CHECK_MESSAGE(accepted_per_key[key] == 1, key << " accepted " << accepted_per_key[key] << " times");
  }
  // Every accepted notification tells the owner their own code (I3).
  for (const auto& r : requests) {
    if (r.status != 200) continue;
    const std::string user = r.body.at("user_id").as_string().c_str();
    const std::string code = r.body.at("code").as_string().c_str();
    CHECK_MESSAGE(db.scalar(fmt::format("SELECT code FROM voucher_item WHERE user_id = '{}'", user)) == code,
                  user << " was told " << code);
  }
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'sent' AND attempts = 3 "
                         "AND last_error IS NULL AND sent_at IS NOT NULL") == 6,
                "all sent, the attempts column counts the 3 tries");
  CHECK_MESSAGE(registry.notifications(true) == 6, "delivered attempts: " << registry.notifications(true));
  CHECK_MESSAGE(registry.notifications(false) == 12, "failed attempts: " << registry.notifications(false));
  CHECK_MESSAGE(registry.prometheus_text().find("voucherd_notification_attempts_total{result=\"failed\"} 12") !=
                    std::string::npos,
                registry.prometheus_text());
  CHECK_MESSAGE(stats_field(db, "outbox_sent") == 6, "stats shows the sent notifications");
  CHECK_MESSAGE(audit_campaign(*db.connect(), "signup").empty(), "I1-I3 hold");
}

TEST_CASE("a receiver that always fails leaves the notification failed after the last try, visible in stats") {
  test_database db;
  db.make_campaign("signup", 10);
  claim_users(db, 4);
  webhook_receiver receiver{always_fail};
  metrics registry;
  outbox_dispatcher dispatcher{db.url(), fast_webhook(receiver, /*max_attempts=*/3), registry, db.pooling()};
  drain_until_settled(db, dispatcher);

  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'failed' AND attempts = 3 "
                         "AND last_error LIKE '%HTTP 500%'") == 4,
                "failed after 3 attempts with the receiver's answer as last_error: "
                    << db.scalar("SELECT string_agg(status || ' ' || attempts || ' ' || coalesce(last_error, ''), '; ') "
                                 "FROM notification_outbox"));
  CHECK_MESSAGE(receiver.requests().size() == 12, "3 attempts for each of 4, got " << receiver.requests().size());
  CHECK_MESSAGE(registry.notifications(false) == 12, "failed attempts counted: " << registry.notifications(false));
  CHECK_MESSAGE(stats_field(db, "outbox_failed") == 4, "stats shows outbox_failed");
  CHECK_MESSAGE(stats_field(db, "outbox_pending") == 0, "nothing left pending");
  CHECK_MESSAGE(dispatcher.drain_once() == 0, "a failed notification is not attempted again");

  // Once the receiver is back, an operator requeues them and they go out;
  // a misspelled campaign is refused, not an empty success.
  webhook_receiver fixed{always_accept};
  const auto typo = run_voucherd({"notify", "--requeue-failed", "sigup", "--once", "--notify", "webhook:" + fixed.url(),
                                  "--database-url", db.url()});
  CHECK_MESSAGE(typo.exit_code == k_exit_rejected, typo.out, typo.err);
  CHECK_MESSAGE(typo.err.find("unknown campaign 'sigup'") != std::string::npos, typo.err);
  CHECK_MESSAGE(stats_field(db, "outbox_failed") == 4, "still failed");
  auto r = run_voucherd({"notify", "--requeue-failed", "signup", "--once", "--notify", "webhook:" + fixed.url(),
                         "--database-url", db.url()});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  const auto out = lines_of(r.out);
  REQUIRE_MESSAGE(out.size() == 2, r.out);
  CHECK_MESSAGE(out[0] == R"({"requeued":4})", r.out);
  CHECK_MESSAGE(fixed.requests().size() == 4, "delivered after the requeue: " << fixed.requests().size());
  CHECK_MESSAGE(stats_field(db, "outbox_sent") == 4, "stats shows them sent");
  CHECK_MESSAGE(stats_field(db, "outbox_failed") == 0, "none failed any more");
}

TEST_CASE("a failed attempt waits for a capped exponential backoff") {
  test_database db;
  db.make_campaign("signup", 1);
  claim_users(db, 1);
  webhook_receiver receiver{always_fail};
  metrics registry;
  auto config = fast_webhook(receiver, /*max_attempts=*/10);
  config.backoff_base = 10s;
  config.backoff_cap = 25s;
  outbox_dispatcher dispatcher{db.url(), config, registry, db.pooling()};
  // Expected waits after attempts 1, 2, 3, 4: 10 s, 20 s, then the cap.
  for (const double expected : {10.0, 20.0, 25.0, 25.0}) {
    CHECK_MESSAGE(dispatcher.drain_once() == 1, "the due notification is attempted");
    CHECK_MESSAGE(dispatcher.drain_once() == 0, "and then held back by its backoff");
    const double wait = std::stod(db.scalar(
        "SELECT extract(epoch FROM next_attempt_at - now()) FROM notification_outbox"));
    CHECK_MESSAGE(std::abs(wait - expected) < 2.0, "waits " << wait << " s, expected about " << expected);
    // Let time pass: the notification is due again.
    db.scalar("UPDATE notification_outbox SET next_attempt_at = now() RETURNING id");
  }
}

TEST_CASE("the dispatcher thread delivers claims as they are made, and stop() returns") {
  test_database db;
  db.make_campaign("signup", 10);
  webhook_receiver receiver{always_accept};
  metrics registry;
  outbox_dispatcher dispatcher{db.url(), fast_webhook(receiver), registry, db.pooling()};
  dispatcher.start();
  claim_users(db, 3);
  const bool all = receiver.wait_until([](const auto& seen) { return seen.size() >= 3; });
  CHECK_MESSAGE(all, "3 notifications within the deadline, got " << receiver.requests().size());
  dispatcher.stop();
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'sent'") == 3,
                "each marked sent once the receiver accepted it");
  CHECK_MESSAGE(registry.prometheus_text().find("voucherd_outbox_pending 0") != std::string::npos,
                "the pending gauge follows the outbox: " << registry.prometheus_text());
}

// Fault injection (a session terminated): the slow label runs it (see CMakeLists.txt).
TEST_CASE("the dispatcher thread survives losing its database connection" * doctest::test_suite("slow")) {
  test_database db;
  db.make_campaign("signup", 10);
  webhook_receiver receiver{always_accept};
  metrics registry;
  outbox_dispatcher dispatcher{db.url(), fast_webhook(receiver), registry, db.pooling()};
  dispatcher.start();
  claim_users(db, 2);
  // Wait for the marks, not the receiver: a delivery whose mark the fault
  // kills is (rightly) delivered again only after its lease.
  REQUIRE_MESSAGE(wait_for_sent(db, 2), "first two sent");
  // Fault: every other session on this test's database is killed, the
  // dispatcher's included.
  const auto killed = db.count(
      "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
      "WHERE datname = current_database() AND pid <> pg_backend_pid()) t");
  CHECK_MESSAGE(killed >= 1, "the dispatcher's connection was terminated");
  claim_users(db, 2, /*first=*/3);
  const bool delivered = wait_for_sent(db, 4);
  dispatcher.stop();
  CHECK_MESSAGE(delivered, "all 4 sent after reconnecting; the receiver got " << receiver.requests().size());
}

TEST_CASE("two dispatchers on one outbox deliver each notification exactly once (SKIP LOCKED)") {
  test_database db;
  db.make_campaign("signup", 300);
  claim_users(db, 300);
  webhook_receiver receiver{always_accept};
  metrics registry;
  auto config = fast_webhook(receiver);
  config.batch_size = 7;  // many small leases, so the two interleave
  outbox_dispatcher a{db.url(), config, registry, db.pooling()}, b{db.url(), config, registry, db.pooling()};
  std::thread ta{[&] { a.drain_once(); }};
  std::thread tb{[&] { b.drain_once(); }};
  ta.join();
  tb.join();
  const auto requests = receiver.requests();
  std::set<std::string> keys;
  for (const auto& r : requests) keys.insert(r.header_key);
  CHECK_MESSAGE(requests.size() == 300, "300 deliveries, got " << requests.size());
  CHECK_MESSAGE(keys.size() == 300, "300 distinct keys, got " << keys.size());
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'sent' AND attempts = 1") == 300,
                "each sent at its first attempt");
}

TEST_CASE("a delivery whose mark was lost is delivered again with the same idempotency key") {
  // The at-least-once window: the sink accepted, then the dispatcher died
  // before marking. Simulated by a lease that runs out (time moved forward).
  test_database db;
  db.make_campaign("signup", 1);
  claim_users(db, 1);
  webhook_receiver receiver{always_accept};
  metrics registry;
  outbox_dispatcher dispatcher{db.url(), fast_webhook(receiver), registry, db.pooling()};
  // Another dispatcher holds the row's lease (it took the row and then died).
  auto conn = db.connect();
  {
    pqxx::work txn{*conn};
    txn.exec("UPDATE notification_outbox SET next_attempt_at = now() + interval '1 hour'");
    txn.commit();
  }
  CHECK_MESSAGE(dispatcher.drain_once() == 0, "a leased row is not taken by another dispatcher");
  {
    pqxx::work txn{*conn};
    txn.exec("UPDATE notification_outbox SET next_attempt_at = now()");  // the lease ran out
    txn.commit();
  }
  CHECK_MESSAGE(dispatcher.drain_once() == 1, "delivered once the lease ran out");
  CHECK_MESSAGE(receiver.requests().size() == 1, "one delivery");
  CHECK_MESSAGE(receiver.requests().at(0).header_key ==
                    db.scalar("SELECT idempotency_key FROM notification_outbox"),
                "the delivery carries the row's key, so a repeat is recognisable");
}

TEST_CASE("voucherd notify --once delivers what is due and reports the attempts") {
  test_database db;
  db.make_campaign("signup", 5);
  claim_users(db, 2);
  webhook_receiver receiver{fail_first_two};
  auto r = run_voucherd({"notify", "--once", "--notify", "webhook:" + receiver.url(), "--backoff-ms", "60000",
                         "--database-url", db.url()});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  const auto summary = boost::json::parse(r.out).as_object();
  CHECK_MESSAGE(summary.at("attempts").as_int64() == 2, r.out);
  CHECK_MESSAGE(summary.at("failed_attempts").as_int64() == 2, r.out);
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'pending' AND attempts = 1 "
                         "AND next_attempt_at > now() + interval '30 seconds'") == 2,
                "each failed once and waits its backoff");
}

TEST_CASE("an https receiver signed by a private CA is delivered to with --webhook-ca-file, and without it the "
          "certificate is refused: a failed attempt, retried later, never a crash") {
  test_database db;
  db.make_campaign("signup", 5);
  claim_users(db, 1);
  const test_ca ca;
  webhook_receiver receiver{always_accept, ca.server_cert(), ca.server_key()};
  REQUIRE(receiver.url().rfind("https://localhost:", 0) == 0);

  // The system trust store alone does not know the test CA.
  auto untrusted = run_voucherd({"notify", "--once", "--notify", "webhook:" + receiver.url(), "--backoff-ms", "0",
                                 "--database-url", db.url()});
  CHECK_MESSAGE(untrusted.exit_code == 0, "a refused certificate is a failed delivery, not a failed run: "
                                              << untrusted.exit_code << " " << untrusted.err);
  CHECK_MESSAGE(untrusted.out.find(R"("failed_attempts":1)") != std::string::npos, untrusted.out << untrusted.err);
  CHECK_MESSAGE(receiver.requests().empty(), "no request reached the receiver");
  CHECK_MESSAGE(receiver.failed_handshakes() >= 1, "the client broke off the handshake");
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'pending' AND attempts = 1") == 1,
                "still pending, one attempt spent, so it is retried");
  const auto last_error = db.scalar("SELECT last_error FROM notification_outbox");
  CHECK_MESSAGE(last_error.find("certificate verify failed") != std::string::npos, last_error);

  // A second try without the CA fails the same way (retried, not crashed).
  auto again = run_voucherd({"notify", "--once", "--notify", "webhook:" + receiver.url(), "--backoff-ms", "0",
                             "--database-url", db.url()});
  CHECK_MESSAGE(again.exit_code == 0, again.err);
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'pending' AND attempts = 2") == 1,
                "the retry was made and failed");

  auto trusted = run_voucherd({"notify", "--once", "--notify", "webhook:" + receiver.url(), "--webhook-ca-file",
                               ca.ca_cert(), "--database-url", db.url()});
  CHECK_MESSAGE(trusted.exit_code == 0, trusted.err);
  CHECK_MESSAGE(trusted.out.find(R"("delivered":1)") != std::string::npos, trusted.out << trusted.err);
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'sent'") == 1, "marked sent");
  REQUIRE_MESSAGE(receiver.requests().size() == 1, "one request over TLS");
  CHECK_MESSAGE(receiver.requests().front().header_key == db.scalar("SELECT idempotency_key FROM notification_outbox"),
                "it carries the idempotency key");
}

TEST_CASE("an https receiver whose certificate names another host is refused (host-name verification)") {
  test_database db;
  db.make_campaign("signup", 5);
  claim_users(db, 1);
  const test_ca ca;
  ca.issue("elsewhere", "DNS:elsewhere.example");
  webhook_receiver receiver{always_accept, ca.dir() + "/elsewhere.crt", ca.dir() + "/elsewhere.key"};
  auto r = run_voucherd({"notify", "--once", "--notify", "webhook:" + receiver.url(), "--webhook-ca-file",
                         ca.ca_cert(), "--database-url", db.url()});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK_MESSAGE(r.out.find(R"("delivered":0)") != std::string::npos, r.out << r.err);
  CHECK_MESSAGE(receiver.requests().empty(), "no request reached a receiver the certificate does not name");
  const auto last_error = db.scalar("SELECT last_error FROM notification_outbox");
  CHECK_MESSAGE(last_error.find("hostname mismatch") != std::string::npos, last_error);
}

TEST_CASE("an unreadable --webhook-ca-file stops voucherd notify at start-up with exit 78") {
  auto r = run_voucherd({"notify", "--once", "--notify", "webhook:https://localhost:9/hook", "--webhook-ca-file",
                         "/no/such/ca.pem", "--database-url", "postgresql://postgres@127.0.0.1:9/none"});
  CHECK_MESSAGE(r.exit_code == 78, r.exit_code << " " << r.err);
  CHECK_MESSAGE(r.err.find("/no/such/ca.pem") != std::string::npos, "the message names the file: " << r.err);
}

TEST_CASE("voucherd notify runs until SIGTERM, delivering claims as they are made, and exits 0") {
  test_database db;
  db.make_campaign("signup", 5);
  webhook_receiver receiver{always_accept};
  const int pid = spawn_voucherd({"notify", "--notify", "webhook:" + receiver.url(), "--poll-ms", "20",
                                  "--database-url", db.url()});
  claim_users(db, 3);
  CHECK_MESSAGE(wait_for_sent(db, 3), "3 sent while it runs");
  CHECK_MESSAGE(::kill(pid, SIGTERM) == 0, "signalled");
  CHECK_MESSAGE(wait_exit(pid) == 0, "SIGTERM exits 0");
  CHECK_MESSAGE(receiver.requests().size() == 3, "one delivery each: " << receiver.requests().size());
}

TEST_CASE("voucherd notify with the log sink writes one JSON line per notification on stderr") {
  test_database db;
  db.make_campaign("signup", 5);
  claim_users(db, 3);
  auto r = run_voucherd({"notify", "--once", "--database-url", db.url()});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  std::set<std::string> keys;
  for (const auto& line : lines_of(r.err)) {
    const auto j = boost::json::parse(line).as_object();
    if (j.at("message") != "notification") continue;
    CHECK_MESSAGE(j.at("level") == "info", line);
    CHECK_MESSAGE(j.contains("time"), line);
    CHECK_MESSAGE(j.at("campaign") == "signup", line);
    CHECK_MESSAGE((j.contains("user_id") && j.contains("code")), line);
    keys.insert(j.at("idempotency_key").as_string().c_str());
  }
  CHECK_MESSAGE(keys.size() == 3, "3 notification lines, stderr: " << r.err);
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'sent'") == 3, "all marked sent");
}

TEST_CASE("--notify is validated once, with a precise message") {
  struct bad {
    std::string notify;
    std::string redis_url;
    std::string expected;
  };
  for (const auto& b : std::vector<bad>{{"smtp", "", "expected log, webhook:URL or redis"},
                                        {"webhook:", "", "needs a URL"},
                                        {"webhook:ftp://example.com/x", "", "expected http[s]://"},
                                        {"webhook:https://", "", "no host"},
                                        {"webhook:http://127.0.0.1:99999/x", "", "port must be"},
                                        {"redis", "http://127.0.0.1:6379", "redis://"},
                                        {"redis", "redis://127.0.0.1:0", "port must be"},
                                        {"redis", "redis://a:1,redis://b:2", "expected one"}}) {
    try {
      parse_notify_option(b.notify, b.redis_url);
      FAIL_CHECK("accepted --notify " << b.notify << " --redis-url " << b.redis_url);
    } catch (const voucherd_error& e) {
      CHECK_MESSAGE(e.kind() == failure_kind::usage, e.what());
      CHECK_MESSAGE(std::string{e.what()}.find(b.expected) != std::string::npos, e.what());
    }
  }
  auto r = run_voucherd({"notify", "--notify", "carrier-pigeon"});
  CHECK_MESSAGE(r.exit_code == k_exit_usage, r.err);
  CHECK_MESSAGE(r.err.find("carrier-pigeon") != std::string::npos, r.err);
}
