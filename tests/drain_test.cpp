// SPEC section 8's drain trap, checked deterministically: after many claims,
// finding the next free voucher reads a small, bounded number of buffers,
// however many vouchers were claimed before it. No timing involved.
#include <doctest/doctest.h>

#include <fmt/format.h>

#include "claim/claim_core.hpp"
#include "db/fixed_limit.hpp"
#include "db/session.hpp"
#include "sql_catalog.hpp"
#include "support/claim_buffers.hpp"
#include "support/test_db.hpp"

using namespace voucherd;
using namespace voucherd::test;

TEST_CASE("after 29,000 claims the next claim still reads a bounded number of buffers") {
  test_database db;
  // Two campaigns share the table, their codes interleaved in chunks.
  for (const char* name : {"drain-a", "drain-b"})
    REQUIRE(run_voucherd({"campaign", "create", name, "--database-url", db.url()}).exit_code == 0);
  for (int chunk = 0; chunk < 30; ++chunk) {
    for (const char* name : {"drain-a", "drain-b"}) {
      std::string codes;
      for (int i = 0; i < 1000; ++i) codes += fmt::format("{}-{:05d}\n", name, chunk * 1000 + i);
      auto r = run_voucherd({"import", "--campaign", name, "-", "--database-url", db.url()}, codes);
      REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    }
  }
  {
    // Vacuum would hide the trap; the mark must bound the walk without it.
    auto conn = db.connect();
    pqxx::nontransaction tx{*conn};
    tx.exec("ALTER TABLE voucher_item SET (autovacuum_enabled = false)");
    tx.exec("ANALYZE voucher_item");
  }

  db_session session{db.url()};
  blocking_claimer engine{db.url(), {}};
  const long fresh = claim_buffers(session.conn(), "drain-a", "probe-0");
  // The pg queue's one-statement path over one pending message with its
  // parsed request, as `voucherd enqueue` leaves it: sql/queue_claim.sql and,
  // as the worker runs at --batch 1, sql/queue_claim_one.sql. Each EXPLAIN
  // rolls back, so the message stays pending for the next.
  {
    auto conn = db.connect();
    pqxx::nontransaction tx{*conn};
    tx.exec("INSERT INTO message_queue (body, user_id, campaign) "
            "VALUES (convert_to('{\"user_id\":\"probe-q\",\"campaign\":\"drain-a\"}', 'UTF8'), 'probe-q', 'drain-a')");
  }
  const auto queue_buffers = [&] { return statement_buffers(session.conn(), with_fixed_limit(sql::queue_claim, 1).text_str(), {""}); };
  const auto one_buffers = [&] { return statement_buffers(session.conn(), sql::queue_claim_one.text_str(), {""}); };
  const long fresh_queue = queue_buffers();
  const long fresh_one = one_buffers();
  for (int b = 0; b < 29; ++b) {
    std::vector<claim_request> batch;
    for (int i = 0; i < 1000; ++i) batch.push_back({"drain-a", fmt::format("u-{}", b * 1000 + i), {}});
    for (const auto& o : engine.claim_batch(batch)) REQUIRE(o.status == claim_status::claimed);
  }
  const long drained = claim_buffers(session.conn(), "drain-a", "probe-1");
  MESSAGE("buffers per claim: fresh pool ", fresh, ", after 29,000 claims ", drained);
  CHECK_MESSAGE(drained <= fresh + 30, "a claim after 29,000 claims read ", drained, " buffers; fresh: ", fresh);
  const long drained_queue = queue_buffers();
  MESSAGE("queue_claim: fresh pool ", fresh_queue, ", after 29,000 claims ", drained_queue);
  CHECK_MESSAGE(drained_queue <= fresh_queue + 30, "queue_claim after 29,000 claims read ", drained_queue,
                " buffers; fresh: ", fresh_queue);
  const long drained_one = one_buffers();
  MESSAGE("queue_claim_one: fresh pool ", fresh_one, ", after 29,000 claims ", drained_one);
  CHECK_MESSAGE(drained_one <= fresh_one + 30, "queue_claim_one after 29,000 claims read ", drained_one,
                " buffers; fresh: ", fresh_one);

  // The test can see the trap: without the free_from mark the same claim walks
  // every dead index entry of the claimed head of the pool.
  {
    auto conn = db.connect();
    pqxx::nontransaction tx{*conn};
    tx.exec("UPDATE campaign SET free_from = 0 WHERE name = 'drain-a'");
  }
  const long unmarked = claim_buffers(session.conn(), "drain-a", "probe-2");
  const long unmarked_queue = queue_buffers();
  const long unmarked_one = one_buffers();
  MESSAGE("without the mark: ", unmarked, "; queue_claim ", unmarked_queue, "; queue_claim_one ", unmarked_one);
  CHECK_MESSAGE(unmarked > drained + 50, "without the mark the claim read only ", unmarked, " buffers");
  CHECK_MESSAGE(unmarked_queue > drained_queue + 50, "without the mark queue_claim read only ", unmarked_queue,
                " buffers");
  CHECK_MESSAGE(unmarked_one > drained_one + 50, "without the mark queue_claim_one read only ", unmarked_one,
                " buffers");
}
