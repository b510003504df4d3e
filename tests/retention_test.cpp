// Retention and a flat outbox (issue 9, point 7), against the real binary:
//  - the dispatcher's take reads a bounded number of buffers however many
//    sent notifications lie behind the pending ones;
//  - `voucherd prune` deletes what is older than its retention and nothing
//    else, and beside running claims and dispatchers deletes nothing they
//    still need (I1-I6 audited from the database and the sink's log);
//  - an idle `voucherd notify` is woken by a worker's claims (LISTEN), not
//    by its poll.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "sql_catalog.hpp"
#include "support/files.hpp"
#include "support/json_field.hpp"
#include "support/test_db.hpp"
#include "support/wait.hpp"
#include "worker_fixture.hpp"

using namespace voucherd;
using namespace voucherd::test;
using namespace std::chrono_literals;

namespace {

// Puts messages on the pg queue through `voucherd enqueue`.
void enqueue(const test_database& db, const std::vector<std::string>& lines) {
  const auto path = temp_path("retention-msgs");
  {
    std::ofstream out{path};
    for (const auto& l : lines) out << l << '\n';
  }
  const auto r = run_voucherd({"enqueue", "--source", "pg", "--campaign", "signup", path, "--database-url", db.url()});
  std::filesystem::remove(path);
  REQUIRE_MESSAGE(r.exit_code == 0, "enqueue failed: " << r.err);
}

std::vector<std::string> messages(const std::string& prefix, int n) {
  std::vector<std::string> lines;
  for (int i = 0; i < n; ++i) lines.push_back(fmt::format(R"({{"user_id":"{0}-{1}","message_id":"{0}-{1}"}})", prefix, i));
  return lines;
}

// A bad message straight into the queue (enqueue checks its input): the
// worker rejects and dead-letters it (I5).
void enqueue_poison(const test_database& db, int n) {
  auto conn = db.connect();
  pqxx::work txn{*conn};
  for (int i = 0; i < n; ++i) txn.exec("INSERT INTO message_queue (body) VALUES ('not json'::bytea)");
  txn.commit();
}

// One `worker --source pg --notify log` run until the queue and the outbox are empty.
void drain_with_worker(const test_database& db) {
  const auto err = temp_path("retention-worker");
  const int pid = spawn_voucherd({"worker", "--source", "pg", "--campaign", "signup", "--concurrency", "2",
                                  "--notify", "log", "--database-url", db.url()},
                                 {}, err);
  const bool drained = wait_until(
      [&] {
        return db.count("SELECT count(*) FROM message_queue WHERE done_at IS NULL") == 0 &&
               db.count("SELECT count(*) FROM notification_outbox WHERE status <> 'sent'") == 0;
      },
      120s);
  CHECK_MESSAGE(terminate_and_wait(pid, 30s) == 0, "the worker exits 0 on SIGTERM: " << read_file(err));
  REQUIRE_MESSAGE(drained, "the worker drained the queue and the outbox: " << read_file(err));
  std::filesystem::remove(err);
}

// The pg queue's row is its message's record; the other sources record an
// outcome in message_outcome. Replaying the same messages through `worker
// --source stdin` records one each (already_claimed: no voucher, no
// notification more).
void record_outcomes(const test_database& db, const std::vector<std::string>& lines) {
  std::string input;
  for (const auto& l : lines) input += l + "\n";
  const auto r = run_voucherd({"worker", "--source", "stdin", "--campaign", "signup", "--batch", "100",
                               "--database-url", db.url()},
                              input);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
}

// Moves every row written so far back in time (their age, as prune sees it).
void age_everything(const test_database& db, const std::string& by) {
  auto conn = db.connect();
  pqxx::work txn{*conn};
  txn.exec(fmt::format("UPDATE notification_outbox SET sent_at = sent_at - interval '{0}', "
                       "created_at = created_at - interval '{0}' WHERE status = 'sent'", by));
  txn.exec(fmt::format("UPDATE message_queue SET done_at = done_at - interval '{0}', "
                       "enqueued_at = enqueued_at - interval '{0}' WHERE done_at IS NOT NULL", by));
  txn.exec(fmt::format("UPDATE message_outcome SET recorded_at = recorded_at - interval '{0}'", by));
  txn.exec(fmt::format("UPDATE dead_letter SET created_at = created_at - interval '{0}'", by));
  txn.commit();
}

// The JSON lines of a text.
std::vector<boost::json::object> json_lines(const std::string& text) {
  std::vector<boost::json::object> out;
  for (const auto& l : lines_of(text)) {
    boost::system::error_code ec;
    auto v = boost::json::parse(l, ec);
    if (!ec && v.is_object()) out.push_back(v.as_object());
  }
  return out;
}

// Buffers (hit + read) of notification_outbox and its indexes, as the
// statistics collector has counted them so far.
long outbox_buffers(pqxx::connection& conn) {
  pqxx::work txn{conn};
  txn.exec("SELECT pg_stat_clear_snapshot()");
  const auto r = txn.exec(
      "SELECT coalesce(heap_blks_hit, 0) + coalesce(heap_blks_read, 0) + coalesce(idx_blks_hit, 0) + "
      "coalesce(idx_blks_read, 0) FROM pg_statio_user_tables WHERE relname = 'notification_outbox'");
  return r[0][0].as<long>();
}

}  // namespace

TEST_CASE("the dispatcher's take reads a bounded number of buffers with 1,000,000 sent notifications behind the pending ones") {
  test_database db;
  db.make_campaign("signup", 10);
  auto conn = db.connect();
  {
    pqxx::work txn{*conn};
    const auto voucher = txn.exec("SELECT min(id) FROM voucher_item")[0][0].as<long>();
    const auto campaign = txn.exec("SELECT id FROM campaign")[0][0].as<long>();
    // Delivered long ago, lower ids than every pending row: what an outbox
    // looks like after months without a prune.
    txn.exec(fmt::format(
        "INSERT INTO notification_outbox (idempotency_key, campaign_id, voucher_id, user_id, code, status, attempts, sent_at) "
        "SELECT 'sent-' || g, {}, {}, 'u' || g, 'CODE', 'sent', 1, now() - interval '1 hour' "
        "FROM generate_series(1, 1000000) g",
        campaign, voucher));
    // Pending: 2,000 waiting for a retry an hour from now (a receiver that
    // was down), then 20 due now.
    txn.exec(fmt::format(
        "INSERT INTO notification_outbox (idempotency_key, campaign_id, voucher_id, user_id, code, attempts, next_attempt_at) "
        "SELECT 'retry-' || g, {}, {}, 'r' || g, 'CODE', 1, now() + interval '1 hour' FROM generate_series(1, 2000) g",
        campaign, voucher));
    txn.exec(fmt::format(
        "INSERT INTO notification_outbox (idempotency_key, campaign_id, voucher_id, user_id, code) "
        "SELECT 'pending-' || g, {}, {}, 'p' || g, 'CODE' FROM generate_series(1, 20) g",
        campaign, voucher));
    txn.commit();
  }
  { pqxx::nontransaction(*conn).exec("VACUUM ANALYZE notification_outbox"); }

  {  // EXPLAIN (ANALYZE, BUFFERS) of one take of this tree's statement, rolled back
    pqxx::work txn{*conn};
    const auto plan_text = txn.exec_params("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql::outbox_take.text_str(),
                                           100, 60000, std::optional<std::string>{})[0][0].as<std::string>();
    txn.abort();
    const auto plan = boost::json::parse(plan_text).as_array()[0].as_object().at("Plan").as_object();
    const auto buffers = plan.at("Shared Hit Blocks").to_number<double>() + plan.at("Shared Read Blocks").to_number<double>();
    CHECK_MESSAGE(buffers < 1000, "a take of 20 due rows read " << buffers << " buffers: " << plan_text);
  }

  {  // one pass of `voucherd notify --once`: the binary under test
    const long before = outbox_buffers(*conn);
    const auto r = run_voucherd({"notify", "--once", "--batch", "100", "--database-url", db.url()});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'pending' AND user_id LIKE 'p%'") == 0,
                  "the pass delivered every due notification");
    // Its backend flushes its statistics when it exits.
    REQUIRE_MESSAGE(wait_until([&] {
                      return db.count(fmt::format("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                                  "AND pid NOT IN (pg_backend_pid(), {})", conn->backendpid())) == 0;
                    }, 30s),
                    "the notify backend exited");
    long after = before;
    wait_until([&] { return (after = outbox_buffers(*conn)) > before; }, 10s);
    MESSAGE("one pass delivering 20 notifications read " << after - before << " buffers");
    // 20 deliveries: a few buffers per take, and per mark. Walking the sent
    // rows in id order reads about 17,000.
    CHECK_MESSAGE(after - before < 2000, "one pass delivering 20 notifications read " << after - before
                                             << " buffers of notification_outbox and its indexes");
  }
}

TEST_CASE("prune deletes what is older than its retention and nothing younger, reporting progress as JSON lines") {
  test_database db;
  db.make_campaign("signup", 1000);
  // Old: delivered, done, recorded and dead-lettered 40 days ago.
  enqueue(db, messages("old", 300));
  enqueue_poison(db, 3);
  drain_with_worker(db);
  record_outcomes(db, messages("old", 300));
  age_everything(db, "40 days");
  // Young: 6 days ago (inside the 7-day defaults), and one row of each kind
  // between 7 and 30 days old, kept only where the retention is 30 days.
  enqueue(db, messages("young", 200));
  enqueue_poison(db, 2);
  drain_with_worker(db);
  record_outcomes(db, messages("young", 200));
  age_everything(db, "6 days");
  const auto count = [&](const std::string& q) { return db.count(q); };
  const auto sent_before = count("SELECT count(*) FROM notification_outbox");
  REQUIRE(sent_before == 500);
  REQUIRE(count("SELECT count(*) FROM dead_letter") == 5);

  const auto r = run_voucherd({"prune", "--prune-batch", "37", "--database-url", db.url()});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const auto lines = json_lines(r.out);
  REQUIRE_MESSAGE(!lines.empty(), "prune prints JSON lines: " << r.out);
  const auto& summary = lines.back();
  REQUIRE_MESSAGE(summary.contains("pruned"), "the last line is the summary: " << r.out);
  const auto& pruned = summary.at("pruned").as_object();
  CHECK(pruned.at("sent_notifications").to_number<long>() == 300);
  CHECK(pruned.at("done_messages").to_number<long>() == 303);
  CHECK(pruned.at("outcomes").to_number<long>() == 300);
  CHECK(pruned.at("dead_letters").to_number<long>() == 3);
  std::set<std::string> done_kinds;
  for (const auto& l : lines)
    if (l.contains("done") && l.at("done").as_bool()) done_kinds.insert(std::string{l.at("kind").as_string()});
  CHECK_MESSAGE(done_kinds.size() == 4, "one done line per kind: " << r.out);

  CHECK_MESSAGE(count("SELECT count(*) FROM notification_outbox WHERE user_id LIKE 'old-%'") == 0, "old sent notifications pruned");
  CHECK_MESSAGE(count("SELECT count(*) FROM notification_outbox WHERE user_id LIKE 'young-%' AND status = 'sent'") == 200,
                "young ones kept");
  CHECK(count("SELECT count(*) FROM message_queue") == 202);
  CHECK(count("SELECT count(*) FROM message_outcome WHERE message_id LIKE 'young-%'") == 200);
  CHECK(count("SELECT count(*) FROM message_outcome") == 200);
  CHECK(count("SELECT count(*) FROM dead_letter") == 2);
  // The owners keep their vouchers: prune never touches the pool.
  CHECK(count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == 500);

  {  // stats counts what a prune would delete
    age_everything(db, "2 days");  // young rows are now 8 days old: past the 7-day defaults of sent and done
    const auto s = run_voucherd({"stats", "--campaign", "signup", "--database-url", db.url()});
    REQUIRE_MESSAGE(s.exit_code == 0, s.err);
    const auto stats = boost::json::parse(s.out).as_object();
    REQUIRE_MESSAGE(stats.contains("prunable"), s.out);
    const auto& p = stats.at("prunable").as_object();
    CHECK(p.at("sent_notifications").to_number<long>() == 200);
    CHECK(p.at("done_messages").to_number<long>() == 202);
    CHECK(p.at("outcomes").to_number<long>() == 0);
    CHECK(p.at("dead_letters").to_number<long>() == 0);
    CHECK(stats.at("outbox_pending").to_number<long>() == 0);
    CHECK(stats.contains("outbox_oldest_pending_s"));
  }
  {  // an age past what a timestamp holds is refused before anything is deleted (found 2026-11-28: this
     // prune deleted the sent notifications, then failed with 65, "timestamp out of range")
    const auto outbox_before = count("SELECT count(*) FROM notification_outbox");
    REQUIRE(outbox_before > 0);
    const auto refused = run_voucherd({"prune", "--keep-sent", "0", "--keep-dead-letters", "100000000d",
                                       "--database-url", db.url()});
    CHECK_MESSAGE(refused.exit_code == 64, refused.err);
    CHECK_MESSAGE(refused.err.find("--keep-dead-letters must be at most 36500d") != std::string::npos, refused.err);
    CHECK(count("SELECT count(*) FROM notification_outbox") == outbox_before);
  }
  {  // a shorter retention reaches the young rows; the outcomes' floor is refused
    const auto again = run_voucherd({"prune", "--keep-sent", "5d", "--keep-done", "5d", "--keep-outcomes", "5d",
                                     "--keep-dead-letters", "5d", "--database-url", db.url()});
    REQUIRE_MESSAGE(again.exit_code == 0, again.err);
    CHECK(count("SELECT count(*) FROM notification_outbox") == 0);
    CHECK(count("SELECT count(*) FROM message_queue") == 0);
    CHECK(count("SELECT count(*) FROM message_outcome") == 0);
    CHECK(count("SELECT count(*) FROM dead_letter") == 0);
    const auto refused = run_voucherd({"prune", "--keep-outcomes", "10m", "--database-url", db.url()});
    CHECK_MESSAGE(refused.exit_code == 64, "an outcome retention below 1h is a usage error: " << refused.err);
  }
}

TEST_CASE("prune running beside claims and dispatchers deletes nothing they still need: I1-I6 hold afterwards") {
  constexpr int k_messages = 1500;
  constexpr int k_poison = 4;
  test_database db;
  db.make_campaign("signup", 2000);
  enqueue(db, messages("new", k_messages));
  enqueue_poison(db, k_poison);
  const auto pool_before = db.count("SELECT count(*) FROM voucher_item");

  const auto worker_err = temp_path("retention-w");
  const auto notify_err = temp_path("retention-n");
  const int worker = spawn_voucherd({"worker", "--source", "pg", "--campaign", "signup", "--concurrency", "4",
                                     "--database-url", db.url()}, {}, worker_err);
  const int notify = spawn_voucherd({"notify", "--notify", "log", "--batch", "10", "--database-url", db.url()}, {},
                                    notify_err);
  // A prune with no retention at all for sent notifications and done
  // messages, over and over, in tiny batches, while rows turn sent and done
  // under it. Outcomes and dead letters keep their defaults: they are what
  // the audit reads.
  std::atomic<bool> finished{false};
  std::atomic<long> pruned_done{0}, pruned_sent{0}, prunes{0}, prune_failures{0};
  std::string prune_error;
  std::thread pruner{[&] {
    while (!finished) {
      const auto r = run_voucherd({"prune", "--keep-sent", "0", "--keep-done", "0", "--prune-batch", "10",
                                   "--database-url", db.url()});
      ++prunes;
      if (r.exit_code != 0) {
        ++prune_failures;
        prune_error = r.err;
        continue;
      }
      const auto lines = json_lines(r.out);
      if (lines.empty() || !lines.back().contains("pruned")) continue;
      const auto& p = lines.back().at("pruned").as_object();
      pruned_done += p.at("done_messages").to_number<long>();
      pruned_sent += p.at("sent_notifications").to_number<long>();
    }
  }};
  // I6 beside it all: an import with a duplicate code loads nothing.
  const auto bad_import = run_voucherd({"import", "--campaign", "signup", "-", "--database-url", db.url()},
                                       "DUPX0001\nDUPX0002\nDUPX0001\n");
  const bool drained = wait_until(
      [&] {
        return db.count("SELECT count(*) FROM message_queue WHERE done_at IS NULL") == 0 &&
               db.count("SELECT count(*) FROM notification_outbox WHERE status <> 'sent'") == 0;
      },
      300s);
  finished = true;
  pruner.join();
  CHECK_MESSAGE(terminate_and_wait(worker, 30s) == 0, read_file(worker_err));
  CHECK_MESSAGE(terminate_and_wait(notify, 30s) == 0, read_file(notify_err));
  REQUIRE_MESSAGE(drained, "queue and outbox drained; worker: " << read_file(worker_err));
  CHECK_MESSAGE(prune_failures == 0, prune_failures << " of " << prunes << " prunes failed: " << prune_error);
  MESSAGE(prunes.load() << " prunes deleted " << pruned_done.load() << " done messages and " << pruned_sent.load()
                        << " sent notifications meanwhile");
  CHECK_MESSAGE(pruned_done > 0, "the prunes ran beside the claims");

  // I1/I2: one owner per voucher, one voucher per user; every message claimed.
  CHECK(db.count("SELECT count(*) FROM (SELECT user_id FROM voucher_item WHERE user_id IS NOT NULL "
                 "GROUP BY campaign_id, user_id HAVING count(*) > 1) d") == 0);
  CHECK(db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == k_messages);
  // I3: the sink's log told every owner their own code, and no one anything else.
  std::map<std::string, std::string> owned;
  {
    auto conn = db.connect();
    pqxx::work txn{*conn};
    for (const auto& row : txn.exec("SELECT user_id, code FROM voucher_item WHERE user_id IS NOT NULL"))
      owned[row[0].as<std::string>()] = row[1].as<std::string>();
  }
  std::set<std::string> told;
  long wrong = 0;
  for (const auto& l : json_lines(read_file(notify_err))) {
    if (!l.contains("message") || l.at("message").as_string() != "notification") continue;
    const std::string user{l.at("user_id").as_string()}, code{l.at("code").as_string()};
    const auto it = owned.find(user);
    if (it == owned.end() || it->second != code) ++wrong;
    told.insert(user);
  }
  CHECK_MESSAGE(wrong == 0, wrong << " notifications told a code its user does not own");
  CHECK_MESSAGE(told.size() == owned.size(), told.size() << " of " << owned.size() << " owners were notified");
  // No notification is left that the prune could have cut short.
  CHECK(db.count("SELECT count(*) FROM notification_outbox WHERE status <> 'sent'") == 0);
  // I4: the pg queue's row is the message's outcome, and prune takes only
  // done rows: every message was done before its row could go, and the rows
  // left are done with one status each.
  CHECK(db.count("SELECT count(*) FROM message_queue WHERE done_at IS NULL") == 0);
  CHECK(db.count("SELECT count(*) FROM message_queue WHERE status = 'claimed'") + pruned_done.load() >= k_messages);
  // I5: the bad messages were rejected and dead-lettered, and changed nothing.
  CHECK(db.count("SELECT count(*) FROM dead_letter") == k_poison);
  // I6: the import with a duplicate loaded nothing.
  CHECK_MESSAGE(bad_import.exit_code == 65, bad_import.err);
  CHECK(db.count("SELECT count(*) FROM voucher_item") == pool_before);
  std::filesystem::remove(worker_err);
  std::filesystem::remove(notify_err);
}

TEST_CASE("an idle `voucherd notify` is woken by a worker's claims within seconds, not by its 60 s poll") {
  test_database db;
  db.make_campaign("signup", 10);
  const auto notify_err = temp_path("retention-listen");
  const int notify = spawn_voucherd({"notify", "--notify", "log", "--poll-ms", "60000", "--database-url", db.url()}, {},
                                    notify_err);
  // Idle: its first pass found nothing (the pass's connection is opened for
  // it and has committed a transaction: its empty take, at least), so a
  // notification delivered from here on was not found by that pass.
  const bool idle = wait_until(
      [&] {
        return db.count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid() AND state = 'idle' AND query = 'COMMIT'") > 0;
      },
      30s);
  REQUIRE_MESSAGE(idle, "notify made its first pass: " << read_file(notify_err));

  // One claim through a worker (stdin source: it exits at the end of its input).
  const auto r = run_voucherd({"worker", "--source", "stdin", "--campaign", "signup", "--database-url", db.url()},
                              R"({"user_id":"listener-1"})" "\n");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  REQUIRE_MESSAGE(r.out.find("\"claimed\"") != std::string::npos, r.out);
  const auto claimed_at = std::chrono::steady_clock::now();
  const bool delivered = wait_until([&] { return read_file(notify_err).find("listener-1") != std::string::npos; }, 15s);
  const auto took = std::chrono::duration<double>(std::chrono::steady_clock::now() - claimed_at).count();
  CHECK_MESSAGE(delivered, "the notification was delivered within 15 s (poll interval 60 s); waited " << took << " s: "
                                                                                                      << read_file(notify_err));
  CHECK_MESSAGE(terminate_and_wait(notify, 30s) == 0, read_file(notify_err));
  std::filesystem::remove(notify_err);
}
