// The outbox dispatcher through the redis sink, against a real redis-server:
// one stream entry per notification with its idempotency key, and a Redis
// that is down costs failed attempts, not notifications.
#include <doctest/doctest.h>

#include <map>
#include <set>

#include <fmt/format.h>

#include "claim/claim_core.hpp"
#include "claim/metrics.hpp"
#include "redis/redis_server.hpp"
#include "notify/outbox_dispatcher.hpp"
#include "support/test_db.hpp"

using namespace voucherd;
using namespace voucherd::test;
using namespace std::chrono_literals;

namespace {

void claim_users(const test_database& db, int users) {
  blocking_claimer engine{db.url(), {}, db.pooling()};
  for (int i = 1; i <= users; ++i) {
    const auto outcome = engine.claim({"signup", fmt::format("user-{}", i), {}});
    REQUIRE_MESSAGE(outcome.status == claim_status::claimed, to_json_line(outcome));
  }
}

notify_config fast_redis(const std::string& url) {
  auto config = parse_notify_option("redis", url);
  config.redis_stream = "test:notifications";
  config.backoff_base = 0ms;
  config.backoff_cap = 0ms;
  config.jitter = 0;
  config.webhook_timeout = 500ms;
  return config;
}

// Every entry of the stream, as field -> value maps.
std::vector<std::map<std::string, std::string>> stream_entries(const redis_endpoint& endpoint, const std::string& stream) {
  redis_node node{endpoint, 2000ms};
  auto reply = node.command({"XRANGE", stream, "-", "+"});
  REQUIRE_MESSAGE(reply, "XRANGE answered");
  REQUIRE_MESSAGE(reply->type == REDIS_REPLY_ARRAY, "XRANGE returns an array");
  std::vector<std::map<std::string, std::string>> out;
  for (std::size_t i = 0; i < reply->elements; ++i) {
    const redisReply* fields = reply->element[i]->element[1];
    std::map<std::string, std::string> entry;
    for (std::size_t f = 0; f + 1 < fields->elements; f += 2)
      entry[std::string(fields->element[f]->str, fields->element[f]->len)] =
          std::string(fields->element[f + 1]->str, fields->element[f + 1]->len);
    out.push_back(std::move(entry));
  }
  return out;
}

}  // namespace

TEST_CASE("the redis sink adds one stream entry per notification, carrying its idempotency key") {
  test_database db;
  db.make_campaign("signup", 10);
  claim_users(db, 5);
  redis_server redis;
  metrics registry;
  outbox_dispatcher dispatcher{db.url(), fast_redis(redis.endpoint().url()), registry, db.pooling()};
  CHECK_MESSAGE(dispatcher.drain_once() == 5, "five deliveries in one pass");

  const auto entries = stream_entries(redis.endpoint(), "test:notifications");
  REQUIRE_MESSAGE(entries.size() == 5, "five entries, got " << entries.size());
  std::set<std::string> keys;
  for (const auto& e : entries) {
    keys.insert(e.at("idempotency_key"));
    CHECK_MESSAGE(e.at("campaign") == "signup", "campaign field");
    CHECK_MESSAGE(db.scalar(fmt::format("SELECT code FROM voucher_item WHERE user_id = '{}' AND id = {}",
                                        e.at("user_id"), e.at("voucher_id"))) == e.at("code"),
                  e.at("user_id") << " owns " << e.at("code"));
    CHECK_MESSAGE(db.count(fmt::format("SELECT count(*) FROM notification_outbox WHERE idempotency_key = '{}' "
                                       "AND status = 'sent'",
                                       e.at("idempotency_key"))) == 1,
                  "the key is the outbox row's, and the row is sent: " << e.at("idempotency_key"));
  }
  CHECK_MESSAGE(keys.size() == 5, "distinct keys");
  CHECK_MESSAGE(dispatcher.drain_once() == 0, "nothing is delivered twice");
  CHECK_MESSAGE(registry.notifications(true) == 5, "delivered counted");
}

// Fault injection (the Redis server killed): the slow label runs it (see CMakeLists.txt).
TEST_CASE("with Redis down, attempts fail and are retried; nothing is marked sent" * doctest::test_suite("slow")) {
  test_database db;
  db.make_campaign("signup", 10);
  claim_users(db, 3);
  redis_server redis;
  const auto url = redis.endpoint().url();
  redis.kill_now();
  metrics registry;
  auto config = fast_redis(url);
  config.max_attempts = 2;
  outbox_dispatcher dispatcher{db.url(), config, registry, db.pooling()};
  CHECK_MESSAGE(dispatcher.drain_once() == 3, "each attempted once");
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'pending' AND attempts = 1 "
                         "AND last_error LIKE '%redis%'") == 3,
                "pending with the failure recorded: " << db.scalar("SELECT max(last_error) FROM notification_outbox"));
  CHECK_MESSAGE(dispatcher.drain_once() == 3, "retried");
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'failed'") == 3,
                "failed after the last of 2 attempts");
  CHECK_MESSAGE(registry.notifications(false) == 6, "failed attempts counted: " << registry.notifications(false));
}
