// The claim strategies of SPEC section 7 against a real Postgres and real
// redis-servers: each lock-based one claims and notifies like the story's
// code; the story's interleavings are forced deterministically through the
// before_write hook; and the race lab (`voucherd bench`) counts what it must.
#include <doctest/doctest.h>

#include <map>
#include <memory>
#include <thread>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "bench/claim_strategy.hpp"
#include "redis/redis_server.hpp"
#include "bench/redlock.hpp"
#include "support/test_db.hpp"

using namespace voucherd;
using namespace voucherd::test;
using namespace std::chrono_literals;

namespace {

std::string owner_of(const test_database& db, std::int64_t voucher_id) {
  return db.scalar(fmt::format("SELECT user_id FROM voucher_item WHERE id = {}", voucher_id));
}

boost::json::object bench(const test_database& db, std::vector<std::string> args) {
  args.insert(args.begin(), "bench");
  const auto r = run_voucherd(args, {}, {{"DATABASE_URL", db.url()}});
  REQUIRE_MESSAGE(r.exit_code == 0, fmt::format("bench failed: {}", r.err));
  const auto lines = lines_of(r.out);
  REQUIRE_MESSAGE(lines.size() == 1, fmt::format("bench prints one JSON line, got: {}", r.out));
  return boost::json::parse(lines[0]).as_object();
}

std::int64_t num(const boost::json::object& o, const char* key) { return o.at(key).to_number<std::int64_t>(); }

}  // namespace

TEST_CASE("one claim after another, every strategy gives each user a voucher and notifies exactly that code") {
  const auto servers = start_redis_servers(3);
  for (auto name : strategy_names()) {
    CAPTURE(name);
    test_database db;
    db.make_campaign("seq", 5);
    db_session session{db.url()};
    strategy_options options;
    options.redis_nodes = endpoints_of(servers);
    const auto strategy = make_strategy(name, session, options);
    CHECK_MESSAGE(strategy->name() == name, "the factory builds what was asked for");
    for (const char* user : {"1", "2", "3"}) {
      const auto o = strategy->claim({"seq", user, {}});
      CHECK_MESSAGE(o.status == claim_status::claimed, fmt::format("user {}: {}", user, to_json_line(o)));
    }
    CHECK_MESSAGE(db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == 3,
                  "three vouchers claimed");
    const auto problems = audit_campaign(*db.connect(), "seq");
    CHECK_MESSAGE(problems.empty(), describe(problems));
    const auto unknown = strategy->claim({"nope", "1", {}});
    CHECK_MESSAGE(unknown.status == claim_status::rejected, "an unknown campaign is rejected");
    const auto bad = strategy->claim({"seq", "", {}});
    CHECK_MESSAGE(bad.status == claim_status::rejected, "an empty user id is rejected before the database");
  }
}

TEST_CASE("naive: a claim between another's read and write takes its voucher, and the first user is told a code "
          "they do not own") {
  test_database db;
  db.make_campaign("story", 2);
  db_session s1{db.url()}, s2{db.url()};
  const auto second = make_strategy("naive", s2, {});
  claim_outcome second_outcome;
  strategy_options first_options;
  // Worker 2 runs its whole claim while worker 1 sits between read and write.
  first_options.before_write = [&] { second_outcome = second->claim({"story", "2", {}}); };
  const auto first = make_strategy("naive", s1, first_options);
  const auto first_outcome = first->claim({"story", "1", {}});
  REQUIRE_MESSAGE(first_outcome.status == claim_status::claimed, to_json_line(first_outcome));
  REQUIRE_MESSAGE(second_outcome.status == claim_status::claimed, to_json_line(second_outcome));
  CHECK_MESSAGE(first_outcome.voucher_id == second_outcome.voucher_id, "both read the same first free voucher");
  CHECK_MESSAGE(owner_of(db, *first_outcome.voucher_id) == "1", "the later write wins the row");
  const auto problems = audit_campaign(*db.connect(), "story");
  CHECK_MESSAGE(problems.size() == 1, fmt::format("user 2 was told a code that user 1 owns: {}", describe(problems)));
}

TEST_CASE("redlock-global keeps other clients out while its holder writes within the TTL") {
  const auto servers = start_redis_servers(3);
  test_database db;
  db.make_campaign("glob", 3);
  db_session session{db.url()};
  redlock probe{endpoints_of(servers), redlock_options{.ttl = 1000ms, .retry_count = 0}};
  bool held_during_write = false;
  strategy_options options;
  options.redis_nodes = endpoints_of(servers);
  options.lock_ttl = 5000ms;
  options.before_write = [&] { held_during_write = !probe.try_acquire("campaign:glob").has_value(); };
  const auto strategy = make_strategy("redlock-global", session, options);
  CHECK_MESSAGE(strategy->claim({"glob", "1", {}}).status == claim_status::claimed, "the claim succeeds");
  CHECK_MESSAGE(held_during_write, "the campaign lock is held between read and write");
  CHECK_MESSAGE(probe.try_acquire("campaign:glob").has_value(), "and released after the write");
}

TEST_CASE("redlock-global: a holder paused past its TTL overwrites the claim made in the meantime") {
  const auto servers = start_redis_servers(3);
  test_database db;
  db.make_campaign("pause", 3);
  db_session s1{db.url()}, s2{db.url()};
  strategy_options options;
  options.redis_nodes = endpoints_of(servers);
  options.lock_ttl = 200ms;
  const auto second = make_strategy("redlock-global", s2, options);
  claim_outcome second_outcome;
  auto paused = options;
  // Worker 2 claims while worker 1 holds the lock between read and write:
  // Redlock makes it wait until worker 1's lock expires, then lets it in.
  paused.before_write = [&] { second_outcome = second->claim({"pause", "2", {}}); };
  const auto first = make_strategy("redlock-global", s1, paused);
  const auto first_outcome = first->claim({"pause", "1", {}});
  REQUIRE_MESSAGE(second_outcome.status == claim_status::claimed, to_json_line(second_outcome));
  CHECK_MESSAGE(first_outcome.voucher_id == second_outcome.voucher_id,
                "after the expiry the second worker read the voucher the paused one had read");
  CHECK_MESSAGE(owner_of(db, *first_outcome.voucher_id) == "1", "the paused worker's late write wins");
  const auto problems = audit_campaign(*db.connect(), "pause");
  CHECK_MESSAGE(!problems.empty(), fmt::format("user 2 was told a code it does not own: {}", describe(problems)));
}

TEST_CASE("the race lab counts the story's races under naive and none under skip-locked") {
  test_database db;
  const std::vector<std::string> common{"--pods", "2", "--messages", "200", "--vouchers", "150",
                                        "--work-ms", "2", "--jitter-ms", "2"};
  auto args = common;
  args.insert(args.end(), {"--strategy", "skip-locked"});
  const auto ok = bench(db, args);
  CHECK_MESSAGE(num(ok, "violations") == 0, boost::json::serialize(ok));
  CHECK_MESSAGE(num(ok, "claimed") == 150, "every voucher claimed once");
  CHECK_MESSAGE(num(ok, "sold_out") == 50, "the 50 users beyond the pool are told sold out");
  CHECK_MESSAGE(num(ok, "lost_messages") == 0, "every message has an outcome");

  args = common;
  args.insert(args.end(), {"--strategy", "naive"});
  const auto racy = bench(db, args);
  CHECK_MESSAGE(num(racy, "notified_not_owner") > 0, boost::json::serialize(racy));
  CHECK_MESSAGE(num(racy, "lost_messages") == 0, "races lose vouchers, not messages");
}
