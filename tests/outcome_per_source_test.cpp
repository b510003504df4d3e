// I4 per source (migration 0006): a message's outcome is recorded under
// (source, message id), so ids that different sources hand out never
// collide, and an id used again for another user or campaign is rejected
// with the reason and dead-lettered, never dropped in silence.
//
// Each database here is migrated by the binary under test, so that these
// tests can run against an older build (VOUCHERD_TEST_BIN) on its own schema.
#include <doctest/doctest.h>

#include <thread>

#include "common/failure.hpp"
#include "db/migrator.hpp"
#include "db/migration_file.hpp"
#include "db/session.hpp"
#include "worker_fixture.hpp"

using namespace voucherd;
using namespace voucherd::test;
using namespace std::chrono_literals;

namespace {

// A database migrated by the binary under test, holding `campaigns` of `codes` codes each.
std::unique_ptr<test_database> database_with(const std::vector<std::string>& campaigns, int codes) {
  auto db = std::make_unique<test_database>(/*migrate=*/false);
  const auto r = run_voucherd({"migrate", "--database-url", db->url()});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  for (const auto& c : campaigns) db->make_campaign(c, codes);
  return db;
}

std::int64_t owned_by(const test_database& db, const std::string& user) {
  return db.count(fmt::format("SELECT count(*) FROM voucher_item WHERE user_id = '{}'", user));
}

// I1-I4 from the database: the audit of each campaign (I1-I3), and every
// claimed or already_claimed outcome names a voucher of its campaign that
// its user owns.
void check_audit(const test_database& db, const std::vector<std::string>& campaigns) {
  auto conn = db.connect();
  for (const auto& c : campaigns) {
    const auto problems = audit_campaign(*conn, c);
    CHECK_MESSAGE(problems.empty(), c << ": " << describe(problems));
  }
  CHECK_MESSAGE(db.count("SELECT count(*) FROM message_outcome m "
                         "LEFT JOIN voucher_item v ON v.id = m.voucher_id "
                         "LEFT JOIN campaign c ON c.id = v.campaign_id "
                         "WHERE m.status IN ('claimed', 'already_claimed') "
                         "AND (v.user_id IS DISTINCT FROM m.user_id OR c.name IS DISTINCT FROM m.campaign)") == 0,
                "every recorded claim names a voucher its user owns");
}

// Starts `voucherd worker --http 127.0.0.1:0` (beside the empty pg queue) and returns its port.
unsigned short start_http_worker(const test_database& db, const std::string& campaign, int concurrency,
                                 const std::string& log_path, int* pid) {
  *pid = spawn_voucherd({"worker", "--source", "pg", "--campaign", campaign, "--concurrency",
                         std::to_string(concurrency), "--http", "127.0.0.1:0", "--database-url", db.url()},
                        {}, log_path);
  const auto port = wait_for_http_port(log_path, *pid, 30s);
  REQUIRE_MESSAGE(port.has_value(), "the worker listens: " << read_file(log_path));
  return *port;
}

}  // namespace

TEST_CASE("two Redis streams whose entries carry the same id each record their own outcome") {
  auto db = database_with({"streams"}, 10);
  redis_server redis;
  {
    redis_node node{redis.endpoint(), 2000ms};
    // Entry ids are timestamps: two streams written in the same millisecond
    // hand out the same ones. Explicit ids make that certain.
    REQUIRE(node.command({"XADD", "orders-a", "1700000000000-0", "body", R"({"user_id":"alice"})"}));
    REQUIRE(node.command({"XADD", "orders-b", "1700000000000-0", "body", R"({"user_id":"bob"})"}));
  }
  std::vector<int> pids;
  std::vector<std::string> logs;
  for (const char* stream : {"orders-a", "orders-b"}) {
    logs.push_back(temp_path(stream));
    pids.push_back(spawn_voucherd({"worker", "--source", "redis", "--redis-url", redis.endpoint().url(), "--stream",
                                   stream, "--campaign", "streams", "--concurrency", "1", "--database-url", db->url()},
                                  {}, logs.back()));
  }
  redis_node node{redis.endpoint(), 2000ms};
  auto acknowledged = [&](const char* stream) {
    auto r = node.command({"XPENDING", stream, "voucherd"});
    return r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->integer == 0;
  };
  const bool both = wait_until(
      [&] { return owned_by(*db, "alice") == 1 && owned_by(*db, "bob") == 1 && acknowledged("orders-a") &&
                   acknowledged("orders-b"); },
      30s);
  for (std::size_t i = 0; i < pids.size(); ++i) {
    CHECK_MESSAGE(terminate_and_wait(pids[i], 15s) == 0, read_file(logs[i]).substr(0, 2000));
    std::filesystem::remove(logs[i]);
  }
  REQUIRE_MESSAGE(both, "both entries claimed and acknowledged within 30 s");
  CHECK_MESSAGE(db->count("SELECT count(*) FROM message_outcome WHERE message_id = '1700000000000-0'") == 2,
                "each stream's entry has its outcome; the second is not dropped as a duplicate of the first");
  CHECK_MESSAGE(db->scalar("SELECT string_agg(source || ' ' || user_id || ' ' || status, ', ' ORDER BY source) "
                           "FROM message_outcome WHERE message_id = '1700000000000-0'") ==
                    "redis:orders-a alice claimed, redis:orders-b bob claimed",
                "keyed by stream");
  CHECK_MESSAGE(db->count("SELECT count(*) FROM dead_letter") == 0, "nothing dead-lettered");
  check_audit(*db, {"streams"});
}

TEST_CASE("HTTP: a message id used again for another user or campaign is answered 422 with the reason and "
          "dead-lettered; the same user again is a redelivery; another message_source is another id") {
  auto db = database_with({"web", "other"}, 10);
  const auto log_path = temp_path("http-reuse");
  int pid = -1;
  const auto port = start_http_worker(*db, "web", 2, log_path, &pid);

  const auto first = post_claim(port, R"({"user_id":"alice","message_id":"order-1"})");
  CHECK_MESSAGE(first.status == 200, first.body);
  CHECK_MESSAGE(json_field(first.body, "status") == "claimed", first.body);

  const auto reused = post_claim(port, R"({"user_id":"bob","message_id":"order-1"})");
  CHECK_MESSAGE(reused.status == 422, "another user's id is rejected: " << reused.status << " " << reused.body);
  CHECK_MESSAGE(json_field(reused.body, "reason") ==
                    "message id order-1 of source http was already used for user alice in campaign web",
                reused.body);
  CHECK_MESSAGE(owned_by(*db, "bob") == 0, "the rejected message claimed nothing");

  const auto elsewhere = post_claim(port, R"({"user_id":"alice","campaign":"other","message_id":"order-1"})");
  CHECK_MESSAGE(elsewhere.status == 422, "the same user in another campaign: " << elsewhere.status << " " << elsewhere.body);
  CHECK_MESSAGE(db->count("SELECT count(*) FROM voucher_item v JOIN campaign c ON c.id = v.campaign_id "
                          "WHERE c.name = 'other' AND v.user_id IS NOT NULL") == 0,
                "nothing claimed in the other campaign");

  const auto again = post_claim(port, R"({"user_id":"alice","message_id":"order-1"})");
  CHECK_MESSAGE(again.status == 200, again.body);
  CHECK_MESSAGE(json_field(again.body, "status") == "already_claimed", again.body);
  CHECK_MESSAGE(json_field(again.body, "code") == json_field(first.body, "code"), "a redelivery gets the same code");

  const auto reused_again = post_claim(port, R"({"user_id":"bob","message_id":"order-1"})");
  CHECK_MESSAGE(reused_again.status == 422, reused_again.body);

  const auto namespaced = post_claim(port, R"({"user_id":"bob","message_id":"order-1","message_source":"shop-b"})");
  CHECK_MESSAGE(namespaced.status == 200, "another client's namespace: " << namespaced.body);
  CHECK_MESSAGE(json_field(namespaced.body, "status") == "claimed", namespaced.body);
  const auto bad_namespace = post_claim(port, R"({"user_id":"carol","message_id":"o-9","message_source":"a b"})");
  CHECK_MESSAGE(bad_namespace.status == 422, bad_namespace.body);

  CHECK_MESSAGE(terminate_and_wait(pid, 15s) == 0, read_file(log_path).substr(0, 2000));
  std::filesystem::remove(log_path);

  CHECK_MESSAGE(db->scalar("SELECT string_agg(source || ' ' || message_id || ' ' || user_id || ' ' || status, ', ' "
                           "ORDER BY source) FROM message_outcome") ==
                    "http order-1 alice claimed, http:shop-b order-1 bob claimed",
                "one outcome per (source, id): the first message's");
  CHECK_MESSAGE(db->scalar("SELECT string_agg(convert_from(body, 'UTF8'), ' | ' ORDER BY id) FROM dead_letter "
                           "WHERE source = 'http' AND message_id = 'order-1' AND reason = "
                           "'message id order-1 of source http was already used for user alice in campaign web'") ==
                    R"({"user_id" : "bob", "campaign" : "web", "message_id" : "order-1"} | )"
                    R"({"user_id" : "alice", "campaign" : "other", "message_id" : "order-1"})",
                "each rejected message is dead-lettered once, with the reason, however often it came");
  check_audit(*db, {"web", "other"});
}

TEST_CASE("HTTP: concurrent first uses of one message id by four users: one claims, three are rejected") {
  auto db = database_with({"race"}, 200);
  const auto log_path = temp_path("http-race");
  int pid = -1;
  const auto port = start_http_worker(*db, "race", 8, log_path, &pid);
  constexpr int k_ids = 50, k_users_per_id = 4;
  std::vector<std::vector<http_reply>> replies(k_users_per_id, std::vector<http_reply>(k_ids));
  std::vector<std::thread> clients;
  for (int u = 0; u < k_users_per_id; ++u)
    clients.emplace_back([&, u] {
      for (int k = 0; k < k_ids; ++k)
        replies[u][k] = post_claim(port, fmt::format(R"({{"user_id":"u{}-{}","message_id":"m-{}"}})", u, k, k));
    });
  for (auto& c : clients) c.join();
  CHECK_MESSAGE(terminate_and_wait(pid, 15s) == 0, read_file(log_path).substr(0, 2000));
  std::filesystem::remove(log_path);

  for (int k = 0; k < k_ids; ++k) {
    CAPTURE(k);
    int claimed = 0, rejected = 0;
    for (int u = 0; u < k_users_per_id; ++u) {
      const auto& r = replies[u][k];
      if (r.status == 200 && json_field(r.body, "status") == "claimed") ++claimed;
      else if (r.status == 422 && json_field(r.body, "reason").find("was already used for user") != std::string::npos)
        ++rejected;
      else FAIL_CHECK("u" << u << ": " << r.status << " " << r.body << r.error);
    }
    CHECK_MESSAGE(claimed == 1, "one user's message claims with id m-" << k << ", got " << claimed);
    CHECK_MESSAGE(rejected == k_users_per_id - 1, "the others are rejected, got " << rejected);
  }
  CHECK_MESSAGE(db->count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == k_ids,
                "one voucher per id: a rejected message claims nothing");
  CHECK_MESSAGE(db->count("SELECT count(*) FROM message_outcome") == k_ids, "one outcome per id");
  CHECK_MESSAGE(db->count("SELECT count(*) FROM message_outcome m JOIN voucher_item v ON v.id = m.voucher_id "
                          "WHERE v.user_id = m.user_id AND m.status = 'claimed'") == k_ids,
                "each outcome is its own user's claim");
  CHECK_MESSAGE(db->count("SELECT count(*) FROM dead_letter") == k_ids * (k_users_per_id - 1),
                "each rejected message dead-lettered once");
  check_audit(*db, {"race"});
}

TEST_CASE("claim --message-id: the same id for another user exits 65 with the reason; for the same user it is a "
          "redelivery; --message-source keeps two adapters' ids apart") {
  auto db = database_with({"cli", "cli2"}, 10);
  auto claim = [&](const std::string& user, const std::string& campaign, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"claim", "--campaign", campaign, "--user", user, "--message-id", "m1",
                                  "--database-url", db->url()};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_voucherd(args);
  };
  const auto first = claim("1", "cli");
  CHECK_MESSAGE(first.exit_code == 0, first.out << first.err);
  const auto other_user = claim("2", "cli");
  CHECK_MESSAGE(other_user.exit_code == k_exit_rejected, "exit 65: " << other_user.exit_code << " " << other_user.out);
  CHECK_MESSAGE(json_field(other_user.out, "status") == "rejected", other_user.out);
  CHECK_MESSAGE(json_field(other_user.out, "reason") ==
                    "message id m1 of source cli was already used for user 1 in campaign cli",
                other_user.out);
  CHECK_MESSAGE(owned_by(*db, "2") == 0, "user 2 got nothing");
  const auto other_campaign = claim("1", "cli2");
  CHECK_MESSAGE(other_campaign.exit_code == k_exit_rejected, other_campaign.out);
  const auto again = claim("1", "cli");
  CHECK_MESSAGE(again.exit_code == 0, again.out << again.err);
  CHECK_MESSAGE(json_field(again.out, "status") == "already_claimed", again.out);
  CHECK_MESSAGE(json_field(again.out, "code") == json_field(first.out, "code"), "the same code again");
  CHECK_MESSAGE(db->count("SELECT count(*) FROM dead_letter WHERE message_id = 'm1' AND reason LIKE '%already used%'") == 2,
                "both rejected claims are dead-lettered");

  const auto namespaced = claim("2", "cli", {"--message-source", "adapter-b"});
  CHECK_MESSAGE(namespaced.exit_code == 0, namespaced.out << namespaced.err);
  CHECK_MESSAGE(json_field(namespaced.out, "status") == "claimed", namespaced.out);
  const auto bad = claim("3", "cli", {"--message-source", "no spaces"});
  CHECK_MESSAGE(bad.exit_code == k_exit_usage, bad.out << bad.err);
  CHECK_MESSAGE(db->scalar("SELECT string_agg(source || ' ' || user_id, ', ' ORDER BY source) FROM message_outcome") ==
                    "cli 1, cli:adapter-b 2",
                "one outcome per (source, id)");
  check_audit(*db, {"cli", "cli2"});
}

TEST_CASE("stdin worker: lines reusing a message id for another user are rejected, in one batch and across batches") {
  for (const int batch : {1, 100}) {
    CAPTURE(batch);
    auto db = database_with({"lines"}, 10);
    const std::string input =
        R"({"user_id":"u1","message_id":"m1"})" "\n"
        R"({"user_id":"u2","message_id":"m1"})" "\n"
        R"({"user_id":"u1","message_id":"m1"})" "\n"
        R"({"user_id":"u3","message_id":"m2"})" "\n"
        R"({"user_id":"u2","message_id":"m1"})" "\n";
    const auto r = run_voucherd({"worker", "--source", "stdin", "--campaign", "lines", "--concurrency", "1",
                                 "--batch", std::to_string(batch), "--database-url", db->url()},
                                input);
    CHECK_MESSAGE(r.exit_code == 0, r.err.substr(0, 2000));
    const auto lines = lines_of(r.out);
    REQUIRE_MESSAGE(lines.size() == 5, r.out);
    const std::vector<std::string> expected{"claimed", "rejected", "already_claimed", "claimed", "rejected"};
    for (std::size_t i = 0; i < lines.size(); ++i)
      CHECK_MESSAGE(json_field(lines[i], "status") == expected[i], "line " << i + 1 << ": " << lines[i]);
    CHECK_MESSAGE(json_field(lines[1], "reason") ==
                      "message id m1 of source stdin was already used for user u1 in campaign lines",
                  lines[1]);
    CHECK_MESSAGE(owned_by(*db, "u2") == 0, "u2's messages claimed nothing");
    CHECK_MESSAGE(db->count("SELECT count(*) FROM message_outcome") == 2, "m1 and m2, once each");
    CHECK_MESSAGE(db->count("SELECT count(*) FROM dead_letter WHERE message_id = 'm1'") == 1,
                  "u2's message is dead-lettered once, though it came twice");
    check_audit(*db, {"lines"});
  }
}

TEST_CASE("migration 0006 keeps every outcome recorded before it, under source 'legacy', and keys outcomes by "
          "(source, message_id)") {
  test_database db{/*migrate=*/false};
  {
    // The schema as it was before 0006, holding outcomes of the old key.
    std::vector<migration_file> before;
    for (const auto& f : embedded_migrations())
      if (f.name < "0006") before.push_back(f);
    db_session session{db.url()};
    apply_migrations(session.conn(), before);
    pqxx::work tx{session.conn()};
    tx.exec("INSERT INTO message_outcome (message_id, campaign, user_id, status, voucher_id, reason) VALUES "
            "('1700000000000-0', 'spring', 'u1', 'claimed', 7, NULL), "
            "('m-1', 'spring', 'u2', 'rejected', NULL, 'unknown campaign')");
    tx.commit();
  }
  const auto r = run_voucherd({"migrate", "--database-url", db.url()});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK_MESSAGE(r.out.find("0006_outcome_per_source.sql") != std::string::npos, r.out);
  CHECK_MESSAGE(db.scalar("SELECT string_agg(concat_ws(' ', source, message_id, campaign, user_id, status, voucher_id, "
                          "reason), ', ' ORDER BY message_id) FROM message_outcome") ==
                    "legacy 1700000000000-0 spring u1 claimed 7, legacy m-1 spring u2 rejected unknown campaign",
                "the rows are kept as they were, with source 'legacy'");
  CHECK_MESSAGE(db.scalar("SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM pg_index i "
                          "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) "
                          "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                          "WHERE i.indrelid = 'message_outcome'::regclass AND i.indisprimary") == "source,message_id",
                "the key is (source, message_id)");
  CHECK_MESSAGE(db.scalar("SELECT to_regclass('dead_letter_source_message_idx')::text") == "dead_letter_source_message_idx",
                "dead letters are looked up by (source, message_id)");
  db.make_campaign("spring", 5);
  const auto claim = run_voucherd({"claim", "--campaign", "spring", "--user", "u9", "--message-id", "m-1",
                                   "--database-url", db.url()});
  CHECK_MESSAGE(claim.exit_code == 0, "an old id is not the CLI's: " << claim.out << claim.err);
  CHECK_MESSAGE(db.count("SELECT count(*) FROM message_outcome WHERE message_id = 'm-1'") == 2, "both kept");
}
