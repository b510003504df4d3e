// voucherd behind a transaction-pooling PgBouncer (issue 9, point 1): the
// pgbouncer scripts/test starts (VOUCHERD_TEST_POOLER_URL) in front of the
// test server; CMake runs this file with VOUCHERD_TEST_THROUGH_POOLER=1, so
// every test_database URL goes through it and every spawned voucherd gets
// VOUCHERD_TRANSACTION_POOLER=1 and VOUCHERD_LISTEN_URL (the server itself).
// The set-up and the audits use direct connections.
//
// Before --transaction-pooler (a017d00) most concurrent claims failed with
// `prepared statement "claim_one" already exists`: a name prepared by one
// client is found on the server connection the next client is handed.
#include <doctest/doctest.h>

#include <chrono>
#include <set>

#include "worker_fixture.hpp"

using namespace voucherd;
using namespace voucherd::test;
using namespace std::chrono_literals;

namespace {

std::string user_line(int user) { return fmt::format(R"({{"user_id":"u{}"}})", user); }

}  // namespace

TEST_CASE("20 concurrent voucherd claim through the pooler all succeed, each user owns one code, I1-I3 hold") {
  REQUIRE_MESSAGE(through_pooler(), "run with VOUCHERD_TEST_THROUGH_POOLER=1 (ctest registers it so)");
  test_database db;
  db.make_campaign("bounce", 30);
  constexpr int k_claims = 20;
  std::vector<int> pids;
  std::vector<std::string> outs, errs;
  for (int i = 0; i < k_claims; ++i) {
    outs.push_back(temp_path("claim-out"));
    errs.push_back(temp_path("claim-err"));
    pids.push_back(spawn_voucherd({"claim", "--campaign", "bounce", "--user", fmt::format("u{}", i), "--message-id",
                                   fmt::format("m{}", i), "--database-url", db.url()},
                                  outs.back(), errs.back()));
  }
  std::set<std::string> codes;
  for (int i = 0; i < k_claims; ++i) {
    CAPTURE(i);
    const int code = wait_exit(pids[static_cast<std::size_t>(i)]);
    const auto out = read_file(outs[static_cast<std::size_t>(i)]);
    const auto err = read_file(errs[static_cast<std::size_t>(i)]);
    CHECK_MESSAGE(code == 0, "claim " << i << " exits 0 through the pooler, got " << code << ": " << err);
    const auto lines = lines_of(out);
    CHECK_MESSAGE(lines.size() == 1, "one outcome line (I4), got: " << out);
    if (lines.size() == 1) {
      CHECK_MESSAGE(json_field(lines[0], "status") == "claimed", lines[0]);
      codes.insert(json_field(lines[0], "code"));
    }
    std::filesystem::remove(outs[static_cast<std::size_t>(i)]);
    std::filesystem::remove(errs[static_cast<std::size_t>(i)]);
  }
  CHECK_MESSAGE(codes.size() == static_cast<std::size_t>(k_claims), "20 different codes, got " << codes.size());
  CHECK_MESSAGE(db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == k_claims,
                "20 vouchers owned");
  auto conn = db.connect();
  const auto problems = audit_campaign(*conn, "bounce");
  CHECK_MESSAGE(problems.empty(), "I1-I3 hold: " << describe(problems));

  // I2 through the pooler: a redelivery answers the same code.
  auto again = run_voucherd({"claim", "--campaign", "bounce", "--user", "u3", "--message-id", "m3", "--database-url",
                             db.url()});
  CHECK_MESSAGE(again.exit_code == 0, again.err);
  CHECK_MESSAGE(json_field(again.out, "status") == "already_claimed", again.out);
  // I5: bad input is rejected and changes nothing.
  auto bad = run_voucherd({"claim", "--campaign", "bounce", "--user", "", "--database-url", db.url()});
  CHECK_MESSAGE(bad.exit_code == 65, "an empty user id is rejected (65), got " << bad.exit_code << ": " << bad.err);
  auto unknown = run_voucherd({"claim", "--campaign", "nope", "--user", "x", "--database-url", db.url()});
  CHECK_MESSAGE(unknown.exit_code == 65, "an unknown campaign is rejected (65), got " << unknown.exit_code << ": "
                                                                                     << unknown.err);
  CHECK(db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == k_claims);
}

TEST_CASE("an import through the pooler is all-or-nothing (I6), and the flag --transaction-pooler is accepted") {
  REQUIRE(through_pooler());
  test_database db;
  auto created = run_voucherd({"campaign", "create", "imp", "--transaction-pooler", "--database-url", db.url()});
  REQUIRE_MESSAGE(created.exit_code == 0, created.err);
  auto dup = run_voucherd({"import", "--campaign", "imp", "-", "--database-url", db.url()}, "AAA1\nAAA2\nAAA1\n");
  CHECK_MESSAGE(dup.exit_code == 65, "a duplicate refuses the file (65), got " << dup.exit_code << ": " << dup.err);
  CHECK_MESSAGE(db.count("SELECT count(*) FROM voucher_item") == 0, "nothing loaded");
  auto good = run_voucherd({"import", "--campaign", "imp", "-", "--database-url", db.url()}, "AAA1\nAAA2\nAAA3\n");
  CHECK_MESSAGE(good.exit_code == 0, good.err);
  auto stats = run_voucherd({"stats", "--campaign", "imp", "--database-url", db.url()});
  CHECK_MESSAGE(json_field(stats.out, "total") == "3", stats.out << stats.err);
}

TEST_CASE("the server-side bounds hold through the pooler: a claim waiting on a held voucher gives up at "
          "--lock-timeout-ms") {
  REQUIRE(through_pooler());
  test_database db;
  db.make_campaign("held", 1);
  // The only voucher is locked by a transaction that stays open: SKIP LOCKED
  // passes it, and the claim then waits for its holder (claim_wait_free),
  // bounded by lock_timeout, which the pooler would not let through as a
  // startup option.
  auto holder = db.connect();
  pqxx::work hold{*holder};
  hold.exec("SELECT id FROM voucher_item FOR UPDATE");
  const auto started = std::chrono::steady_clock::now();
  auto r = run_voucherd({"claim", "--campaign", "held", "--user", "w", "--lock-timeout-ms", "300",
                         "--statement-timeout-ms", "20000", "--database-url", db.url()});
  const auto took = std::chrono::steady_clock::now() - started;
  hold.abort();
  CHECK_MESSAGE(r.exit_code == 75, "running out of lock_timeout is transient (75), got " << r.exit_code << ": " << r.err);
  CHECK_MESSAGE(r.err.find("lock") != std::string::npos, "the error says it was a lock wait: " << r.err);
  CHECK_MESSAGE(took < 5s, "given up after about 300 ms, not at the 20 s statement timeout: took "
                               << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
}

TEST_CASE("the worker drains pg and stdin sources through the pooler with --batch 1 and 100: one outcome each, "
          "I1-I3 hold") {
  REQUIRE(through_pooler());
  for (const std::string kind : {"pg", "stdin"}) {
    for (const int batch : {1, 100}) {
      CAPTURE(kind);
      CAPTURE(batch);
      queue_under_test q{kind, "work", 400};
      std::vector<std::string> lines;
      for (int u = 1; u <= 500; ++u) lines.push_back(user_line(u));
      q.enqueue(lines);
      int exit_code = -1;
      std::string log;
      const auto out = q.drain(4, batch, &exit_code, &log);
      CHECK_MESSAGE(exit_code == 0, log.substr(0, 2000));
      REQUIRE_MESSAGE(out.size() == lines.size(), "one outcome per message, got " << out.size() << ": "
                                                                                  << log.substr(0, 2000));
      std::size_t claimed = 0, sold_out = 0;
      for (const auto& o : out) {
        if (o.status == "claimed") ++claimed;
        else if (o.status == "sold_out") ++sold_out;
      }
      CHECK_MESSAGE(claimed == 400, "400 codes claimed, got " << claimed);
      CHECK_MESSAGE(sold_out == 100, "the other 100 sold out, got " << sold_out);
      CHECK_MESSAGE(log.find("already exists") == std::string::npos, "no prepared-statement clash: " << log.substr(0, 2000));
      auto conn = q.db().connect();
      const auto problems = audit_campaign(*conn, "work");
      CHECK_MESSAGE(problems.empty(), "I1-I3 hold: " << describe(problems));
    }
  }
}

TEST_CASE("a pooled pg worker wakes on NOTIFY through --listen-url, and polls without it") {
  REQUIRE(through_pooler());
  for (const bool listen : {true, false}) {
    CAPTURE(listen);
    test_database db;
    db.make_campaign("wake", 10);
    std::map<std::string, std::string> env;
    if (!listen) env["VOUCHERD_LISTEN_URL"] = "";
    const auto err = temp_path("worker-err");
    const int pid = spawn_voucherd({"worker", "--source", "pg", "--campaign", "wake", "--concurrency", "2",
                                    "--database-url", db.url()},
                                   {}, err, env);
    // Messages put on the queue after the worker went idle are taken.
    std::this_thread::sleep_for(500ms);
    auto r = run_voucherd({"enqueue", "--source", "pg", "-", "--database-url", db.url()},
                          user_line(1) + "\n" + user_line(2) + "\n");
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    const bool done = wait_until(
        [&] { return db.count("SELECT count(*) FROM message_queue WHERE done_at IS NOT NULL") == 2; }, 10s);
    ::kill(pid, SIGTERM);
    const int code = wait_exit(pid);
    const auto log = read_file(err);
    std::filesystem::remove(err);
    CHECK_MESSAGE(done, "both messages were taken: " << log.substr(0, 2000));
    CHECK_MESSAGE(code == 0, log.substr(0, 2000));
    CHECK(db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == 2);
  }
}
