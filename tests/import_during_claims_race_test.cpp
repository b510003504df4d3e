// I8, imports never stop claims (issue 8, item 4): a claim of a campaign
// completes while `voucherd import` of the same campaign is still reading its
// (slow) input, and the codes of that import are claimable once it is done.
// And the free mark keeps up with 8 concurrent claimers: after many claims,
// campaign.free_from has moved far up the pool and one more claim reads a
// small, bounded number of buffers (SPEC section 8's drain trap, checked
// without timing).
#include <doctest/doctest.h>

#include "claim/claim_core.hpp"
#include "fault_fixture.hpp"
#include "support/claim_buffers.hpp"

using namespace voucherd;
using namespace voucherd::test;
using namespace voucherd::test::fault;

namespace {

// What the backends of a database other than the caller's are doing, for a
// check's message.
std::string activity(const test_database& db) {
  std::string out;
  auto conn = db.connect();
  pqxx::nontransaction tx{*conn};
  for (const auto& r : tx.exec("SELECT pid, coalesce(application_name, ''), coalesce(state, ''), "
                               "coalesce(wait_event_type, ''), coalesce(wait_event, ''), "
                               "pg_blocking_pids(pid)::text, left(coalesce(query, ''), 80) "
                               "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    out += fmt::format("\n  pid {} app '{}' {} wait {}/{} blocked by {}: {}", r[0].c_str(), r[1].c_str(),
                       r[2].c_str(), r[3].c_str(), r[4].c_str(), r[5].c_str(), r[6].c_str());
  return out.empty() ? " (no other backend)" : out;
}

}  // namespace

TEST_CASE("a claim completes while an import of the same campaign is still reading its input") {
  test_database db;
  db.make_campaign("slow", 5);
  child import{{"import", "--campaign", "slow", "-", "--database-url", db.url()}, {}, /*with_stdin_pipe=*/true};
  REQUIRE(import.write_stdin("NEW-0001\nNEW-0002\n"));
  // The claim starts once the import is copying its input into the database:
  // it has connected, opened its transaction and taken whatever it takes. An
  // import that reads everything first never gets there while its input is open.
  const bool copying = wait_until(
      [&] {
        return db.count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid() AND state = 'active' AND query ILIKE 'COPY%'") > 0;
      },
      10s);
  if (!copying) MESSAGE("the import was not copying its input within 10 s");
  REQUIRE_MESSAGE(import.running(), "the import ended before its input did: ", import.describe());

  child claim{{"claim", "--campaign", "slow", "--user", "during-import", "--database-url", db.url()}};
  const auto code = claim.wait_for(10s);
  const bool import_running = import.running();
  std::string waiting_on;
  if (!code) waiting_on = activity(db);
  CHECK_MESSAGE(code.has_value(), "the claim still waited 10 s after it started, while the import kept reading "
                                  "its input; backends:", waiting_on);
  if (code) {
    CHECK_MESSAGE(import_running, "the import was still running when the claim returned: ", import.describe());
    CHECK_MESSAGE(*code == 0, claim.describe());
    CHECK_MESSAGE(json_field(claim.out(), "status") == "claimed", claim.describe());
    CHECK_MESSAGE(json_field(claim.out(), "code").rfind("SLOW", 0) == 0, "an existing free code: ", claim.describe());
  }

  // Then the rest of the codes, and the end of the input.
  std::string rest;
  for (int i = 3; i <= 10; ++i) rest += fmt::format("NEW-{:04d}\n", i);
  CHECK(import.write_stdin(rest));
  import.close_stdin();
  const auto import_code = import.wait_for(60s);
  REQUIRE_MESSAGE(import_code.has_value(), "the import did not finish within 60 s of its input's end: ",
                  import.describe());
  CHECK_MESSAGE(*import_code == 0, import.describe());
  CHECK_MESSAGE(json_field(lines_of(import.out()).empty() ? "" : lines_of(import.out()).back(), "status") == "imported",
                import.describe());
  if (!code) {
    const auto late = claim.wait_for(60s);
    CHECK_MESSAGE(late.has_value(), "the claim did not finish within 60 s of the import's end: ", claim.describe());
  }
  CHECK(db.count("SELECT count(*) FROM voucher_item") == 15);

  // Every code, old and new, can be claimed afterwards; then the pool is sold out.
  std::string users;
  for (int i = 1; i <= 15; ++i) users += fmt::format("after-{}\n", i);
  const auto after = run_voucherd({"claim-batch", "--campaign", "slow", "-", "--database-url", db.url()}, users);
  CHECK_MESSAGE(after.exit_code == 0, after.err);
  int claimed = 0, sold_out = 0;
  for (const auto& line : lines_of(after.out)) {
    claimed += json_field(line, "status") == "claimed";
    sold_out += json_field(line, "status") == "sold_out";
  }
  const int before = db.count("SELECT count(*) FROM voucher_item WHERE user_id = 'during-import'") == 1 ? 1 : 0;
  CHECK_MESSAGE(claimed == 15 - before, "every remaining code claimed after the import: ", after.out);
  CHECK_MESSAGE(sold_out == before, after.out);
  CHECK(db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NULL") == 0);
  const auto problems = audit_campaign(*db.connect(), "slow");
  CHECK_MESSAGE(problems.empty(), describe(problems));
}

TEST_CASE("under 8 concurrent claimers the free mark advances and the next claim reads a bounded number of buffers") {
  // 8 claimers, one message per transaction (the case where the mark is
  // hardest to move: some claim is always in flight).
  constexpr int k_messages = 20000, k_codes = 22000;
  test_database db;
  REQUIRE(run_voucherd({"campaign", "create", "mark", "--database-url", db.url()}).exit_code == 0);
  {
    std::string codes;
    for (int i = 1; i <= k_codes; ++i) codes += fmt::format("MARK-{:06d}\n", i);
    const auto r = run_voucherd({"import", "--campaign", "mark", "-", "--database-url", db.url()}, codes);
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  }
  {
    // Vacuum would hide the trap: the mark must bound the walk without it.
    auto conn = db.connect();
    pqxx::nontransaction tx{*conn};
    tx.exec("ALTER TABLE voucher_item SET (autovacuum_enabled = false)");
    tx.exec("ANALYZE voucher_item");
  }
  const long fresh = claim_buffers(*db.connect(), "mark", "probe-fresh");
  {
    const auto path = temp_path("messages");
    {
      std::ofstream out{path};
      for (int i = 1; i <= k_messages; ++i) out << fmt::format(R"({{"user_id":"u-{}"}})", i) << '\n';
    }
    const auto r = run_voucherd({"enqueue", "--source", "pg", "--campaign", "mark", path, "--database-url", db.url()});
    std::filesystem::remove(path);
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  }

  child worker{{"worker", "--source", "pg", "--campaign", "mark", "--concurrency", "8", "--batch", "1",
                "--database-url", db.url()}};
  const bool drained = wait_until(
      [&] {
        return !worker.running() || db.count("SELECT count(*) FROM message_queue WHERE done_at IS NULL") == 0;
      },
      180s);
  CHECK_MESSAGE(worker.terminate(30s) == 0, worker.describe());
  REQUIRE_MESSAGE(drained, "the queue was not drained within 180 s: ",
                  db.count("SELECT count(*) FROM message_queue WHERE done_at IS NULL"), " left; ", worker.describe());
  CHECK(db.count("SELECT count(*) FROM message_queue WHERE status = 'claimed'") == k_messages);

  const auto first_id = db.count("SELECT min(id) FROM voucher_item");
  const auto last_claimed = db.count("SELECT max(id) FROM voucher_item WHERE user_id IS NOT NULL");
  const auto free_from = db.count("SELECT free_from FROM campaign WHERE name = 'mark'");
  const auto first_free = db.count("SELECT min(id) FROM voucher_item WHERE user_id IS NULL");
  MESSAGE("vouchers from ", first_id, "; claimed up to ", last_claimed, "; first free ", first_free, "; free_from ",
          free_from);
  CHECK_MESSAGE(free_from > first_id + (last_claimed - first_id) / 2,
                "free_from stayed at ", free_from, " while vouchers ", first_id, "..", last_claimed,
                " were claimed by 8 concurrent claimers");
  CHECK_MESSAGE(free_from <= first_free, "free_from never passes a free voucher");

  std::string plan;
  const long drained_buffers = claim_buffers(*db.connect(), "mark", "probe-drained", &plan);
  MESSAGE("buffers per claim: fresh pool ", fresh, ", after ", k_messages, " claims ", drained_buffers);
  // The mark trails the first free voucher by at most about k_free_mark_gap
  // claimed ids (a claimer moves it once it lands further out), and the claim
  // visits each of their dead index entries once: a bound that does not grow
  // with the pool. Without the mark the claim walks every claimed row
  // (tens of thousands of buffers here).
  CHECK_MESSAGE(first_free - free_from <= 2 * k_free_mark_gap,
                "free_from ", free_from, " trails the first free voucher ", first_free, " by more than ",
                2 * k_free_mark_gap);
  CHECK_MESSAGE(drained_buffers < 2 * k_free_mark_gap + 200, "after ", k_messages, " claims one more claim read ",
                drained_buffers, " buffers (fresh pool: ", fresh, ")");
  const auto problems = audit_campaign(*db.connect(), "mark");
  CHECK_MESSAGE(problems.empty(), describe(problems));
}
