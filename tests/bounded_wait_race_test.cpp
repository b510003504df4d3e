// I8, nothing waits forever (issue 8, item 1), under injected faults:
//   - another session holds ACCESS EXCLUSIVE on voucher_item: `voucherd claim
//     --lock-timeout-ms 500` gives up with exit 75 (transient) and claims
//     nothing; a worker with the same timeout keeps running and claims the
//     message once the lock is gone;
//   - the Postgres backend of a worker's claimer is frozen with SIGSTOP: the
//     claimer's client-side deadline (statement timeout + a margin) drops
//     that connection, it reconnects and carries on; after SIGCONT every
//     message has exactly one outcome and I1-I4 hold;
//   - a statement_timeout of a day in the URL: a claim that waits 3 s on a
//     table lock is answered once the lock goes, not given up by the client.
#include <doctest/doctest.h>

#include <algorithm>
#include <random>

#include "common/failure.hpp"
#include "fault_fixture.hpp"

using namespace voucherd;
using namespace voucherd::test;
using namespace voucherd::test::fault;

namespace {

// Puts one message per user on the pg queue (voucherd enqueue).
void enqueue_users(const test_database& db, const std::string& campaign, const std::string& prefix, int from, int to) {
  const auto path = temp_path("messages");
  {
    std::ofstream out{path};
    for (int i = from; i <= to; ++i) out << fmt::format(R"({{"user_id":"{}-{}"}})", prefix, i) << '\n';
  }
  const auto r = run_voucherd({"enqueue", "--source", "pg", "--campaign", campaign, path, "--database-url", db.url()});
  std::filesystem::remove(path);
  REQUIRE_MESSAGE(r.exit_code == 0, "enqueue: ", r.err);
}

std::int64_t pending(const test_database& db) {
  return db.count("SELECT count(*) FROM message_queue WHERE done_at IS NULL");
}

// I4 for the pg queue, and that what each message recorded is what its user
// owns: every message done with one status, each claimed message's voucher
// owned by its user.
void check_every_message_claimed_once(const test_database& db, const std::string& campaign, std::int64_t total) {
  CHECK_MESSAGE(db.count("SELECT count(*) FROM message_queue") == total, "messages enqueued");
  CHECK_MESSAGE(pending(db) == 0, "every message has its outcome");
  CHECK_MESSAGE(db.count("SELECT count(*) FROM message_queue WHERE status = 'claimed'") == total,
                "every message claimed (distinct users, enough codes): ",
                db.scalar("SELECT string_agg(status || ':' || n, ', ') FROM "
                          "(SELECT coalesce(status, 'pending') AS status, count(*) AS n FROM message_queue GROUP BY 1) s"));
  CHECK_MESSAGE(db.count("SELECT count(*) FROM message_queue q JOIN voucher_item v ON v.id = q.voucher_id "
                         "WHERE v.user_id = convert_from(q.body, 'UTF8')::json->>'user_id'") == total,
                "each message's voucher is owned by its user");
  CHECK_MESSAGE(db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == total,
                "one voucher per message, none lost, none extra");
  const auto problems = audit_campaign(*db.connect(), campaign);
  CHECK_MESSAGE(problems.empty(), describe(problems));
}

}  // namespace

TEST_CASE("voucherd claim gives up on a table lock after --lock-timeout-ms: exit 75, nothing claimed") {
  test_database db;
  db.make_campaign("locked", 5);
  lock_holder holder{db};
  holder.lock_table_exclusive("voucher_item");

  struct variant {
    std::string name;
    std::vector<std::string> extra;
    std::map<std::string, std::string> env;
    std::chrono::seconds bound;
  };
  const std::vector<variant> variants{
      {"--lock-timeout-ms 500", {"--lock-timeout-ms", "500"}, {}, 60s},
      {"VOUCHERD_LOCK_TIMEOUT_MS=500", {}, {{"VOUCHERD_LOCK_TIMEOUT_MS", "500"}}, 30s},
  };
  for (const auto& v : variants) {
    CAPTURE(v.name);
    std::vector<std::string> args{"claim", "--campaign", "locked", "--user", "u-1", "--message-id", "m-1",
                                  "--database-url", db.url()};
    args.insert(args.end(), v.extra.begin(), v.extra.end());
    child claim{args, v.env};
    const auto code = claim.wait_for(v.bound);
    if (!code) {
      claim.kill();
      FAIL_CHECK("voucherd claim with ", v.name, " still waited for the table lock after ", v.bound.count(),
                 " s: ", claim.describe());
      continue;
    }
    CHECK_MESSAGE(*code == k_exit_transient, "a lock wait that timed out is transient (75): ", claim.describe());
    CHECK_MESSAGE(claim.out().find("sold_out") == std::string::npos, claim.describe());
  }
  holder.release();
  CHECK_MESSAGE(db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == 0, "nothing was claimed");
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox") == 0, "nothing was notified");
  CHECK_MESSAGE(db.count("SELECT count(*) FROM message_outcome") == 0,
                "a transient answer records no outcome (a retry can still change it)");
  // The retry the exit code asks for now succeeds.
  const auto retry = run_voucherd({"claim", "--campaign", "locked", "--user", "u-1", "--message-id", "m-1",
                                   "--lock-timeout-ms", "500", "--database-url", db.url()});
  CHECK_MESSAGE(retry.exit_code == 0, retry.out, retry.err);
  CHECK_MESSAGE(json_field(retry.out, "status") == "claimed", retry.out);
}

TEST_CASE("a statement_timeout the URL gives in days is the client's deadline too: a claim that waits 3 s on a lock "
          "is answered, not given up") {
  // The client gives a connection up at the server's statement_timeout plus
  // a margin. Until 2026-11-28 it read "1d" as 1 ms (and "1.5min" as 1 ms,
  // and a value past the int range crashed it): this claim was cut off after
  // 2,001 ms as "connection lost", while the server would have waited a day.
  test_database db;
  db.make_campaign("patient", 2);
  lock_holder holder{db};
  holder.lock_table_exclusive("voucher_item");
  const auto started = std::chrono::steady_clock::now();
  const auto url = db.url() + (db.url().find('?') == std::string::npos ? "?" : "&") +
                   "options=-c%20statement_timeout%3D1d";
  child claim{{"claim", "--campaign", "patient", "--user", "u-1", "--lock-timeout-ms", "20000", "--database-url", url}};
  CHECK_MESSAGE(wait_for_lock_waits(db, holder.backend_pid(), 1, [&] { return !claim.running(); }, 30s) >= 1,
                "the claim waits on the table lock: ", claim.describe());
  while (claim.running() && std::chrono::steady_clock::now() - started < 3s) std::this_thread::sleep_for(50ms);
  CHECK_MESSAGE(claim.running(), "still waiting after 3 s, as the server lets it: ", claim.describe());
  holder.release();
  const auto code = claim.wait_for(30s);
  REQUIRE_MESSAGE(code, "the claim ended after the release: ", claim.describe());
  CHECK_MESSAGE(*code == 0, claim.describe());
  CHECK_MESSAGE(json_field(claim.out(), "status") == "claimed", claim.describe());
}

TEST_CASE("a worker with --lock-timeout-ms keeps running while a table lock is held and claims once it is released") {
  test_database db;
  db.make_campaign("locked", 10);
  child worker{{"worker", "--source", "pg", "--campaign", "locked", "--concurrency", "2", "--lock-timeout-ms", "500",
                "--database-url", db.url()}};
  enqueue_users(db, "locked", "before", 1, 1);
  REQUIRE_MESSAGE((wait_until([&] { return !worker.running() || pending(db) == 0; }, 30s) && worker.running()),
                  "the worker claims a message before the lock: ", worker.describe());

  lock_holder holder{db};
  holder.lock_table_exclusive("voucher_item");
  enqueue_users(db, "locked", "during", 1, 1);
  // The worker tries the message (a backend waits on the holder), gives up
  // after 500 ms, and tries again: held until it waited in three transactions.
  const auto tries = wait_for_lock_waits(db, holder.backend_pid(), 3, [&] { return !worker.running(); }, 30s);
  CHECK_MESSAGE(tries >= 3, "the worker waited on the table lock in ", tries,
                " transactions within 30 s, not three (one per lock timeout): ", worker.describe());
  CHECK_MESSAGE(worker.running(), "the worker stopped while the table was locked: ", worker.describe());
  CHECK_MESSAGE(pending(db) == 1, "the message waits for the lock");
  holder.release();

  CHECK_MESSAGE(wait_until([&] { return pending(db) == 0; }, 60s),
                "the message was not claimed within 60 s of the release: ", worker.describe());
  CHECK_MESSAGE(worker.terminate(30s) == 0, "SIGTERM exits 0: ", worker.describe());
  check_every_message_claimed_once(db, "locked", 2);
}

TEST_CASE("a worker whose database backend stops answering (SIGSTOP) reconnects and claims every message once") {
  test_database db;
  db.make_campaign("frozen", 1000);
  // One claimer: if it does not give up on the frozen backend, nothing moves.
  // The statement timeout comes from the environment (the option's twin).
  child worker{{"worker", "--source", "pg", "--campaign", "frozen", "--concurrency", "1", "--database-url", db.url()},
               {{"VOUCHERD_STATEMENT_TIMEOUT_MS", "1000"}}};
  enqueue_users(db, "frozen", "a", 1, 100);
  REQUIRE_MESSAGE((wait_until([&] { return !worker.running() || pending(db) == 0; }, 60s) && worker.running()),
                  "the first 100 messages claimed: ", worker.describe());

  // The worker's backends, by the application_name its connections set.
  auto backends_where = [&](const std::string& condition) {
    std::vector<int> pids;
    auto conn = db.connect();
    pqxx::nontransaction tx{*conn};
    for (const auto& r : tx.exec("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND " +
                                 condition + " ORDER BY pid"))
      pids.push_back(r[0].as<int>());
    return pids;
  };
  auto pids = backends_where("application_name = 'voucherd-worker'");
  CHECK_MESSAGE(!pids.empty(), "no backend with application_name 'voucherd-worker'; the database shows: ",
                db.scalar("SELECT string_agg(pid || ':' || quote_literal(application_name), ', ') FROM "
                          "pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"));
  if (pids.empty()) pids = backends_where("true");  // only the worker is connected besides us
  REQUIRE_MESSAGE(!pids.empty(), "the worker has no backend");
  std::mt19937 rng{20261128};
  const int victim = pids[rng() % pids.size()];
  // Frozen while idle (between transactions), so it holds no lock that the
  // claims after it need.
  CHECK_MESSAGE(wait_until([&] { return db.scalar(fmt::format("SELECT state FROM pg_stat_activity WHERE pid = {}",
                                                              victim)) == "idle"; }, 10s),
                "backend ", victim, " was never idle");
  frozen_backend frozen{victim};
  MESSAGE("froze backend ", victim, " of ", pids.size());

  enqueue_users(db, "frozen", "b", 1, 100);
  const bool carried_on = wait_until([&] { return !worker.running() || pending(db) == 0; }, 45s);
  CHECK_MESSAGE(carried_on, pending(db), " of 100 messages still pending 45 s after the worker's backend froze: ",
                worker.describe());
  CHECK_MESSAGE(worker.running(), "the worker keeps running: ", worker.describe());

  frozen.thaw();
  // The claimer dropped that connection: the thawed backend finds its client gone and ends.
  CHECK_MESSAGE(wait_until([&] { return db.count(fmt::format("SELECT count(*) FROM pg_stat_activity WHERE pid = {}",
                                                             victim)) == 0; }, 15s),
                "the frozen backend ", victim, " is still connected 15 s after SIGCONT: the worker kept its connection");
  enqueue_users(db, "frozen", "c", 1, 50);
  CHECK_MESSAGE(wait_until([&] { return !worker.running() || pending(db) == 0; }, 60s),
                "the messages enqueued after the thaw claimed: ", worker.describe());
  CHECK_MESSAGE(worker.terminate(30s) == 0, "SIGTERM exits 0: ", worker.describe());
  check_every_message_claimed_once(db, "frozen", 250);
}
