// sql/queue_claim.sql, the pg queue's one-statement path (and
// sql/queue_claim_one.sql, the same for one message), and what it reads:
// the request each queue row holds, parsed where the message was enqueued
// (migration 0009, queued_request_of). A message the worker's parser
// accepts is claimed by that statement for exactly the user and campaign
// the parser reads (with the worker's --campaign for one that names none);
// every other message is left pending and untouched, for the general path.
// A fixed corpus of the shapes that matter, then generated bodies.
#include <doctest/doctest.h>

#include <map>
#include <set>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "db/fixed_limit.hpp"
#include "db/session.hpp"
#include "source/message.hpp"
#include "source/pg_queue_source.hpp"
#include "sql_catalog.hpp"
#include "support/test_db.hpp"

using namespace voucherd;
using namespace voucherd::test;

namespace {

constexpr const char* k_default = "signup";  // the worker's --campaign

struct taken_row {
  std::int64_t id;
  std::string body;
  std::string status;  // "" = left for the general path
  std::string owner;   // of the voucher, when a status
  std::string campaign;
};

// How the one-statement path is run over the messages of a test.
enum class claimed_by { one_batch, one_at_a_time };

// Puts the bodies on the queue, runs the one-statement path over them and
// reads back what it did to each, in order: queue_claim once over all of
// them, or queue_claim_one once per message as the worker at --batch 1 runs
// it.
// Runs the one-statement path over the queued messages `ids` (the whole
// queue). Returns how many rows the statements answered: one per message.
std::size_t run_path(const test_database& db, pqxx::connection& conn, const std::vector<std::int64_t>& ids,
                     claimed_by how) {
  if (how == claimed_by::one_batch) {
    pqxx::work txn{conn};
    const auto r = exec(txn, queue_claim_statement(ids.size()), std::string{k_default});
    txn.commit();
    return static_cast<std::size_t>(r.size());
  }
  // A message the statement leaves stays pending and first in line. A second
  // connection holds each such message locked, as the worker's general path
  // does while it answers it, so the next statement skips it.
  auto holder = db.connect();
  pqxx::work hold{*holder};
  std::size_t rows = 0;
  for (const auto id : ids) {
    pqxx::work txn{conn};
    const auto r = exec(txn, queue_claim_statement(1), std::string{k_default});
    txn.commit();
    rows += static_cast<std::size_t>(r.size());
    REQUIRE(r.size() == 1);
    CHECK(r[0]["id"].as<std::int64_t>() == id);  // in queue order, past the held ones
    if (r[0]["status"].is_null()) hold.exec_params("SELECT 1 FROM message_queue WHERE id = $1 FOR UPDATE", id);
  }
  hold.abort();
  return rows;
}

std::vector<taken_row> claim_once(const test_database& db, const std::vector<std::string>& bodies,
                                  claimed_by how = claimed_by::one_batch) {
  auto conn = db.connect();
  const auto ids = enqueue_messages(*conn, bodies);
  run_path(db, *conn, ids, how);
  std::vector<taken_row> out;
  pqxx::work txn{*conn};
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto r = txn.exec_params(
        "SELECT coalesce(q.status, ''), q.done_at IS NULL, coalesce(v.user_id, ''), coalesce(c.name, ''),"
        "       q.attempts "
        "  FROM message_queue q LEFT JOIN voucher_item v ON v.id = q.voucher_id"
        "  LEFT JOIN campaign c ON c.id = v.campaign_id WHERE q.id = $1",
        ids[i]);
    taken_row row{ids[i], bodies[i], r[0][0].as<std::string>(), r[0][2].as<std::string>(), r[0][3].as<std::string>()};
    CHECK_MESSAGE(r[0][1].as<bool>() == row.status.empty(), "done exactly when answered: " << bodies[i]);
    out.push_back(std::move(row));
  }
  return out;
}

// What the worker's parser makes of a body: "user@campaign", or "" when it
// rejects it.
std::string parsed_as(const std::string& body) {
  auto r = parse_message(body, body.size() > k_max_message_bytes, k_default, "pg");
  if (auto* req = std::get_if<claim_request>(&r)) return req->user_id + "@" + req->campaign;
  return "";
}

// Enqueues the bodies (users distinct unless a test wants otherwise), runs
// the one-statement path over them and checks each against the parser.
// Returns how many were claimed.
int check_against_parser(const test_database& db, const std::vector<std::string>& bodies,
                         const std::set<std::string>& campaigns, claimed_by how = claimed_by::one_batch) {
  const auto rows = claim_once(db, bodies, how);
  std::set<std::string> seen;
  int claimed = 0;
  for (const auto& row : rows) {
    CAPTURE(row.body);
    const auto want = parsed_as(row.body);
    const auto campaign = want.substr(want.rfind('@') + 1);
    // A campaign that does not exist is the general path's to answer, and so
    // is a second message of one user in one statement; one in a later
    // statement finds the user's voucher.
    const bool plain = !want.empty() && campaigns.count(campaign);
    const bool first = plain && seen.insert(want).second;
    if (first) {
      CHECK(row.status == "claimed");
      CHECK(row.owner + "@" + row.campaign == want);
      ++claimed;
    } else if (plain && how == claimed_by::one_at_a_time) {
      CHECK(row.status == "already_claimed");
      CHECK(row.owner + "@" + row.campaign == want);
    } else {
      CHECK(row.status == "");
    }
  }
  CHECK(db.count("SELECT count(*) FROM notification_outbox") == claimed);
  return claimed;
}

}  // namespace

TEST_CASE("queue_claim claims what the parser accepts, as the parser reads it, and leaves the rest pending") {
  claimed_by how = claimed_by::one_batch;
  SUBCASE("all in one statement") {}
  SUBCASE("one message a statement") { how = claimed_by::one_at_a_time; }
  test_database db;
  db.make_campaign("signup", 200);
  db.make_campaign("spring", 50);
  const std::string long_user(128, 'a');
  const std::vector<std::string> bodies{
      R"({"user_id": 1})",
      R"({"user_id":"u2"})",
      "  {\t\"user_id\" :\r\n \"u3\"  }\n",
      R"({"user_id": "u4", "campaign": "spring"})",
      R"({"campaign":"spring","user_id":-5})",
      R"({"user_id": 1234567890123456789})",
      R"({"user_id": "a b!#$%&'()*+,-./:;<=>?@[]^_`{|}~"})",
      R"({"user_id": ")" + long_user + R"("})",
      R"({"user_id": ")" + long_user + R"(b"})",
      R"({"user_id": -0})",
      R"({"user_id": 1.0})",
      R"({"user_id": 1e3})",
      R"({"user_id": "a\"b"})",
      R"({"user_id": "\u0041"})",
      R"({"user_id": "é"})",
      R"({"user_id": "tab\there"})",
      R"({"user_id": "\u0000"})",
      std::string{"{\"user_id\": \"nul\0x\"}", 20},
      R"({"user_id": ""})",
      R"({"user_id": "x", "user_id": "y"})",
      R"({"user_id": "u5", "message_id": "m1"})",
      R"({"user_id": "u6", "message_id": ""})",
      R"({"user_id": "u7", "message_id": {}})",
      R"({"user_id": "u8", "campaign": null})",
      R"({"user_id": "u9", "campaign": "Spring"})",
      R"({"user_id": "u10", "campaign": "nope"})",
      R"({"user_id": "u11", "campaign": "spring", "extra": 1})",
      R"({"campaign": "spring"})",
      R"([{"user_id": 1}])",
      R"({"user_id": 1)",
      "{\"user_id\": 12}\f",
      "",
      "\xff\xfe{\"user_id\": 13}",
      std::string(k_max_message_bytes + 1, ' '),
      R"({"user_id":"u2"})",  // a second message of one user
  };
  const int claimed = check_against_parser(db, bodies, {"signup", "spring"}, how);
  CHECK(claimed >= 15);
  // A message put on the queue as bytes alone holds no request: the general path's.
  auto conn = db.connect();
  {
    pqxx::work txn{*conn};
    txn.exec(R"(INSERT INTO message_queue (body) VALUES (convert_to('{"user_id": "raw"}', 'UTF8')))");
    exec(txn, with_fixed_limit(sql::queue_claim, 10), std::string{k_default});
    txn.commit();
  }
  CHECK(db.count("SELECT count(*) FROM message_queue WHERE done_at IS NULL AND body = convert_to('{\"user_id\": \"raw\"}', 'UTF8')") == 1);
}

TEST_CASE("queue_claim answers an owner already_claimed with its voucher, and leaves inactive campaigns, tried "
          "messages and an empty pool to the general path") {
  claimed_by how = claimed_by::one_batch;
  SUBCASE("all in one statement") {}
  SUBCASE("one message a statement") { how = claimed_by::one_at_a_time; }
  test_database db;
  db.make_campaign("signup", 3);
  db.make_campaign("later", 10);
  db.scalar("UPDATE campaign SET starts_at = now() + interval '1 day' WHERE name = 'later'");
  db.scalar("UPDATE voucher_item SET user_id = 'owner', claimed_at = now() WHERE id = (SELECT min(id) FROM voucher_item)");
  auto conn = db.connect();
  const auto ids = enqueue_messages(*conn, {R"({"user_id": "owner"})", R"({"user_id": "tried"})",
                                            R"({"user_id": "a", "campaign": "later"})", R"({"user_id": "b"})",
                                            R"({"user_id": "c"})", R"({"user_id": "d"})"});
  db.scalar(fmt::format("UPDATE message_queue SET attempts = 1 WHERE id = {}", ids[1]));
  REQUIRE(run_path(db, *conn, ids, how) == 6);  // one row per message taken
  auto status = [&](std::int64_t id) {
    return db.scalar(fmt::format("SELECT coalesce(status, '') FROM message_queue WHERE id = {}", id));
  };
  CHECK(status(ids[0]) == "already_claimed");
  CHECK(db.scalar(fmt::format("SELECT v.user_id FROM message_queue q JOIN voucher_item v ON v.id = q.voucher_id "
                              "WHERE q.id = {}", ids[0])) == "owner");
  CHECK(status(ids[1]) == "");  // attempts > 0: only ever tried alone, by the general path
  CHECK(status(ids[2]) == "");  // not active yet
  // Two free vouchers for b, c, d: two claimed, the third left (its sold_out is for the general path to make true).
  CHECK(status(ids[3]) == "claimed");
  CHECK(status(ids[4]) == "claimed");
  CHECK(status(ids[5]) == "");
  CHECK(db.count("SELECT count(*) FROM voucher_item v JOIN campaign c ON c.id = v.campaign_id "
                 "WHERE c.name = 'signup' AND v.user_id IS NULL") == 0);
  CHECK(db.count("SELECT count(*) FROM notification_outbox") == 2);
}

TEST_CASE("queue_claim agrees with the parser on generated bodies") {
  claimed_by how = claimed_by::one_batch;
  SUBCASE("all in one statement") {}
  SUBCASE("one message a statement") { how = claimed_by::one_at_a_time; }
  test_database db;
  db.make_campaign("signup", 2000);
  db.make_campaign("spring", 2000);
  std::mt19937 rng{20261127};
  auto pick = [&](const std::vector<std::string>& options) {
    return options[std::uniform_int_distribution<std::size_t>{0, options.size() - 1}(rng)];
  };
  const std::vector<std::string> spaces{"", " ", "  ", "\t", "\n", "\r\n"};
  const std::vector<std::string> not_json_spaces{"\f", "\v", "\xc2\xa0"};
  const std::vector<std::string> campaigns{"", "signup", "spring", "Spring", "nope", "spring!", "s\\u0070ring", "null"};
  std::vector<std::string> bodies;
  for (int n = 0; n < 1500; ++n) {
    auto ws = [&] { return rng() % 40 == 0 ? pick(not_json_spaces) : pick(spaces); };
    std::string user;
    switch (n % 6) {
      case 0: user = std::to_string(n); break;
      case 1: user = fmt::format("\"u{}\"", n); break;
      case 2: user = fmt::format("\"u{}{}\"", n, pick({"", "\\n", "\\u00e9", "é", "\"", " x", "'", "\t"})); break;
      case 3: user = fmt::format("{}{}", pick({"-", "", "0", "+"}), n); break;
      case 4: user = fmt::format("{}{}", n, pick({".0", "e1", "", "0000000000000000000"})); break;
      default: user = pick({"null", "true", "\"\"", "[1]", "{}"}); break;
    }
    const auto campaign = pick(campaigns);
    std::string members = fmt::format("{}\"user_id\"{}:{}{}{}", ws(), ws(), ws(), user, ws());
    if (!campaign.empty()) {
      const auto value = campaign == "null" ? campaign : "\"" + campaign + "\"";
      const auto c = fmt::format("{}\"campaign\"{}:{}{}{}", ws(), ws(), ws(), value, ws());
      members = n % 2 ? members + "," + c : c + "," + members;
    }
    if (n % 17 == 0) members += ",\"message_id\":\"m\"";
    bodies.push_back(fmt::format("{}{{{}}}{}", ws(), members, ws()));
  }
  const int claimed = check_against_parser(db, bodies, {"signup", "spring"}, how);
  const int rows = static_cast<int>(bodies.size());
  // Both ways must occur for the check to mean something.
  CHECK(claimed > 100);
  CHECK(claimed < rows - 100);
  MESSAGE(fmt::format("{} of {} generated bodies were claimed", claimed, rows));
}

TEST_CASE("queue_claim with the worker's batch written in is planned once, not at every claim") {
  test_database db;
  db.make_campaign("signup", 21000);
  std::vector<std::string> bodies;
  for (int i = 0; i < 20000; ++i) bodies.push_back(fmt::format(R"({{"user_id": "p{}"}})", i));
  auto conn = db.connect();
  enqueue_messages(*conn, bodies);
  db.scalar("ANALYZE message_queue");
  db.scalar("ANALYZE voucher_item");
  // Run as the worker runs it: one prepared statement, each call its own
  // transaction; pg_prepared_statements counts how each call was planned.
  const auto plans = [&](const std::string& name, const std::string& text, const std::vector<std::string>& params) {
    conn->prepare(name, text);
    for (int i = 0; i < 12; ++i) {
      pqxx::work txn{*conn};
      txn.exec_prepared(name, pqxx::prepare::make_dynamic_params(params));
      txn.commit();
    }
    pqxx::nontransaction tx{*conn};
    const auto r = tx.exec_params("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = $1", name);
    return std::pair{r[0][0].as<long>(), r[0][1].as<long>()};
  };
  // The batch as a parameter: the planner cannot see it in a generic plan, so
  // it may keep planning each call (measured on a fresh database like this:
  // 20,008 plans for 20,004 calls). Reported, not checked: it is the
  // planner's choice.
  const auto [param_generic, param_custom] = plans("as_parameter", std::string{sql::queue_claim.text}, {k_default, "1"});
  MESSAGE("LIMIT as a parameter, 12 calls: ", param_generic, " generic plans, ", param_custom, " custom");
  const auto& fixed = with_fixed_limit(sql::queue_claim, 1);
  CHECK(fixed.name == "queue_claim/limit=1");
  const auto [generic, custom] = plans("written_in", std::string{fixed.text}, {k_default});
  MESSAGE("LIMIT written in, 12 calls: ", generic, " generic plans, ", custom, " custom");
  CHECK(custom <= 5);  // Postgres tries custom plans for the first five calls only
  CHECK(generic >= 7);
  // The statement for one message has no LIMIT parameter to hide.
  CHECK(&queue_claim_statement(1) == &sql::queue_claim_one);
  const auto [one_generic, one_custom] = plans("one", std::string{sql::queue_claim_one.text}, {k_default});
  MESSAGE("queue_claim_one, 12 calls: ", one_generic, " generic plans, ", one_custom, " custom");
  CHECK(one_custom <= 5);
  CHECK(one_generic >= 7);
  CHECK(db.count("SELECT count(*) FROM message_queue WHERE status = 'claimed'") == 36);
}

TEST_CASE("with_fixed_limit writes in only a last parameter that is a LIMIT") {
  const auto& take = with_fixed_limit(sql::queue_take, 100);
  CHECK(take.text.find("LIMIT 100") != std::string_view::npos);
  CHECK(take.text.find("LIMIT $1") == std::string_view::npos);
  CHECK(&with_fixed_limit(sql::queue_take, 100) == &take);  // made once
  CHECK(with_fixed_limit(sql::queue_claim, 7).text.find("nullif($1, '')") != std::string_view::npos);
  CHECK_THROWS_AS(with_fixed_limit(sql::claim_one, 1), std::logic_error);   // its last parameter is no LIMIT
  CHECK_THROWS_AS(with_fixed_limit(sql::worker_begin, 1), std::logic_error);  // no parameter at all
}
