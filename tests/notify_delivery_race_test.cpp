// I3 under load and faults: claims are made by several threads while three
// dispatchers drain the outbox into a flaky webhook receiver (refusals, and
// answers that arrive after the sink gave up, so the receiver saw a delivery
// the dispatcher counts as failed), and every database session is killed
// mid-run. Afterwards every owner was told their own code, nobody else was
// told anything, and deduplicating by idempotency key leaves exactly one
// notification per owner: at-least-once delivery, exactly once in effect.
#include <doctest/doctest.h>

#include <map>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "claim/claim_core.hpp"
#include "claim/metrics.hpp"
#include "notify/outbox_dispatcher.hpp"
#include "notify_webhook_receiver.hpp"
#include "support/test_db.hpp"
#include "support/wait.hpp"

using namespace voucherd;
using namespace voucherd::test;
using namespace std::chrono_literals;

namespace {

constexpr int k_claimers = 4;
constexpr int k_users_per_claimer = 400;
constexpr int k_codes = 1500;  // fewer than users: some claims are sold_out, and they notify nobody

// Claims for its users, reconnecting and retrying when the session is killed
// (a retried claim is idempotent: it comes back already_claimed).
void claimer(const std::string& url, int index, std::atomic<int>& retries) {
  std::unique_ptr<blocking_claimer> session;
  for (int i = 0; i < k_users_per_claimer; ++i) {
    const claim_request request{"signup", fmt::format("u{}-{}", index, i), {}};
    for (int attempt = 0;; ++attempt) {
      if (attempt == 100) {  // CHECK, not REQUIRE: this runs on a thread of its own
        CHECK_MESSAGE(attempt < 100, "a claim kept failing: " << request.user_id);
        return;
      }
      try {
        if (!session) session = std::make_unique<blocking_claimer>(url, pg_deadlines{});
        session->claim(request);
        break;
      } catch (const std::exception&) {
        session.reset();
        ++retries;
        std::this_thread::sleep_for(20ms);  // backoff before reconnecting, not a synchronisation
      }
    }
  }
}

}  // namespace

TEST_CASE("under load, refusals, late answers and killed sessions every owner is told their code exactly once in effect") {
  test_database db;
  db.make_campaign("signup", k_codes);

  std::mt19937 rng{20261126};  // seeded: the same refusals every run
  webhook_receiver receiver{[&rng](const std::string&, int) {
    const int roll = std::uniform_int_distribution<int>{0, 99}(rng);
    if (roll < 25) return webhook_receiver::answer{503};
    if (roll < 27) return webhook_receiver::answer{200, 400ms};  // accepted, but after the sink's timeout
    return webhook_receiver::answer{200};
  }};

  auto config = parse_notify_option("webhook:" + receiver.url(), "");
  config.max_attempts = 100;  // never 'failed' here: every notification must arrive
  config.backoff_base = 5ms;
  config.backoff_cap = 50ms;
  config.webhook_timeout = 200ms;
  config.poll_interval = 20ms;
  config.batch_size = 20;
  metrics registry;
  std::vector<std::unique_ptr<outbox_dispatcher>> dispatchers;
  for (int i = 0; i < 3; ++i) {
    dispatchers.push_back(std::make_unique<outbox_dispatcher>(db.url(), config, registry));
    dispatchers.back()->start();
  }

  std::atomic<int> retries{0};
  std::vector<std::thread> claimers;
  for (int c = 0; c < k_claimers; ++c) claimers.emplace_back([&, c] { claimer(db.url(), c, retries); });

  // Fault: once some notifications went out, kill every session on the database.
  REQUIRE_MESSAGE(receiver.wait_until([](const auto& seen) { return seen.size() >= 200; }, 60s),
                  "deliveries started");
  const auto killed = db.count(
      "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
      "WHERE datname = current_database() AND pid <> pg_backend_pid()) t");
  for (auto& t : claimers) t.join();

  REQUIRE_MESSAGE(
      wait_until([&] { return db.count("SELECT count(*) FROM notification_outbox WHERE status <> 'sent'") == 0; }, 120s),
      "the outbox did not drain in 120 s");
  for (auto& d : dispatchers) d->stop();
  MESSAGE("sessions killed: " << killed << ", claim retries: " << retries.load());
  CHECK_MESSAGE(killed >= 4, "the fault hit the dispatchers and claimers, killed " << killed);

  auto conn = db.connect();
  const auto violations = audit_campaign(*conn, "signup");
  CHECK_MESSAGE(violations.empty(), "I1-I3: " << (violations.empty() ? "" : violations.front()));

  // Who owns what, from the database.
  std::map<std::string, std::string> owner_code, key_user;
  {
    pqxx::work txn{*conn};
    for (const auto& row : txn.exec("SELECT user_id, code FROM voucher_item WHERE user_id IS NOT NULL"))
      owner_code[row[0].as<std::string>()] = row[1].as<std::string>();
    for (const auto& row : txn.exec("SELECT idempotency_key, user_id FROM notification_outbox"))
      key_user[row[0].as<std::string>()] = row[1].as<std::string>();
  }
  CHECK_MESSAGE(owner_code.size() == static_cast<std::size_t>(k_codes), "the pool drained: " << owner_code.size());

  // What the receiver accepted, deduplicated by key as a receiver would.
  std::map<std::string, int> accepted_per_key;
  int told_wrong = 0;
  for (const auto& r : receiver.requests()) {
    if (r.status != 200) continue;
    ++accepted_per_key[r.header_key];
    const std::string user = r.body.at("user_id").as_string().c_str();
    const std::string code = r.body.at("code").as_string().c_str();
    if (owner_code.count(user) == 0 || owner_code.at(user) != code || key_user[r.header_key] != user) ++told_wrong;
  }
  CHECK_MESSAGE(told_wrong == 0, told_wrong << " deliveries told a user a code they do not own");
  std::set<std::string> told_users;
  int repeats = 0;
  for (const auto& [key, n] : accepted_per_key) {
    told_users.insert(key_user[key]);
    repeats += n - 1;
  }
  CHECK_MESSAGE(told_users.size() == owner_code.size(), "every owner told: " << told_users.size() << " of " << owner_code.size());
  CHECK_MESSAGE(accepted_per_key.size() == owner_code.size(), "one key per owner: " << accepted_per_key.size());
  MESSAGE("repeated deliveries (same key, dropped by a deduplicating receiver): " << repeats);
  CHECK_MESSAGE(repeats > 0, "late answers were retried: the at-least-once window was exercised");
  // A delivery whose mark was lost with its session is delivered again after
  // its lease: at least one accepted attempt per notification.
  CHECK_MESSAGE(registry.notifications(true) >= owner_code.size(),
                "accepted deliveries counted: " << registry.notifications(true));
}
