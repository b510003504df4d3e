// The command-line surface of the race lab and of `claim --strategy`: bad
// calls are usage errors (exit 64) with a message that names the problem,
// before any database or Redis is touched; good calls print the documented
// JSON.
#include <doctest/doctest.h>

#include <boost/json/parse.hpp>
#include <fmt/format.h>

#include "support/test_db.hpp"

using namespace voucherd::test;

TEST_CASE("bench refuses bad calls with exit 64 and says why") {
  struct bad_call {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<bad_call> calls{
      {{"bench", "--strategy", "optimistic"}, "unknown strategy"},
      {{"bench", "--pods", "2,8"}, "--pods takes one number"},
      {{"bench", "--pods", "0"}, "--pods must be"},
      {{"bench", "--messages", "0"}, "--messages must be"},
      {{"bench", "--strategy", "redlock", "--redis-nodes", "localhost:6379"}, "redis://"},
      {{"bench", "--lock-ttl-ms", "1"}, "--lock-ttl-ms"},
  };
  for (const auto& call : calls) {
    const auto r = run_voucherd(call.args);
    CHECK_MESSAGE(r.exit_code == 64, fmt::format("{}: exit {} ({})", call.args[2], r.exit_code, r.err));
    CHECK_MESSAGE(r.err.find(call.says) != std::string::npos,
                  fmt::format("expected '{}' in: {}", call.says, r.err));
    CHECK_MESSAGE(r.out.empty(), "nothing on stdout for a usage error");
  }
}

TEST_CASE("claim --strategy chooses the claim; a lock-based one without Redis nodes is a usage error") {
  test_database db;
  db.make_campaign("cli", 2);
  const std::map<std::string, std::string> env{{"DATABASE_URL", db.url()}};
  auto r = run_voucherd({"claim", "--campaign", "cli", "--user", "7", "--strategy", "naive"}, {}, env);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const auto o = boost::json::parse(r.out).as_object();
  CHECK_MESSAGE(o.at("status").as_string() == "claimed", r.out);
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE user_id = '7'") == 1,
                "the naive claim writes its notification to the outbox");

  r = run_voucherd({"claim", "--campaign", "cli", "--user", "8", "--strategy", "redlock"}, {}, env);
  CHECK_MESSAGE(r.exit_code == 64, r.err);
  CHECK_MESSAGE(r.err.find("--redis-nodes") != std::string::npos, r.err);
  CHECK_MESSAGE(db.count("SELECT count(*) FROM voucher_item WHERE user_id = '8'") == 0, "nothing was claimed");

  r = run_voucherd({"claim", "--campaign", "cli", "--user", "8", "--strategy", "redlock", "--redis-nodes",
                    "redis://127.0.0.1:1"},
                   {}, env);
  CHECK_MESSAGE(r.exit_code == 75, fmt::format("no reachable Redis is transient (retry later): {}", r.err));
  CHECK_MESSAGE(db.count("SELECT count(*) FROM voucher_item WHERE user_id = '8'") == 0,
                "no lock, no write");
}
