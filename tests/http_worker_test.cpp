// The HTTP surface end to end, through the real daemon: `voucherd worker
// --http 127.0.0.1:0 --notify webhook:URL` answers each outcome with its
// status code, its /metrics agree with the database after a run, the
// notifications of its claims reach the webhook, and SIGTERM stops it with 0.
#include <doctest/doctest.h>

#include <signal.h>

#include <filesystem>
#include <map>
#include <set>

#include <fmt/format.h>

#include "notify_webhook_receiver.hpp"
#include "support/files.hpp"
#include "support/http_client.hpp"
#include "support/json_field.hpp"
#include "support/prometheus.hpp"
#include "support/test_db.hpp"

using namespace voucherd;
using namespace voucherd::test;
using namespace std::chrono_literals;

namespace http = boost::beast::http;

TEST_CASE("voucherd worker --http answers each outcome, its metrics match the database, its claims are notified") {
  test_database db;
  db.make_campaign("signup", 10);
  webhook_receiver receiver{[](const std::string&, int) { return webhook_receiver::answer{200}; }};
  const auto log_path = temp_path("http-worker");
  const int pid = spawn_voucherd({"worker", "--source", "pg", "--campaign", "signup", "--concurrency", "2", "--http",
                                  "127.0.0.1:0", "--notify", "webhook:" + receiver.url(), "--database-url", db.url()},
                                 {}, log_path);
  const auto found = wait_for_http_port(log_path, pid, 20s);
  REQUIRE_MESSAGE(found.has_value(), "the worker listens within 20 s: " << read_file(log_path));
  const auto port = *found;

  CHECK_MESSAGE(http_call(port, http::verb::get, "/healthz").status == 200, "healthz");
  auto ready = http_call(port, http::verb::get, "/readyz");
  CHECK_MESSAGE(ready.status == 200, "readyz with the database up: " << ready.body);

  // 14 users for 10 codes, with repeats, rejects and malformed bodies.
  std::map<unsigned, int> statuses;
  for (int i = 1; i <= 14; ++i) {
    auto r = post_claim(port, fmt::format(R"({{"user_id": "user-{}", "message_id": "m-{}"}})", i, i));
    ++statuses[r.status];
    CHECK_MESSAGE((r.status == 200 || r.status == 409), "claim " << i << ": " << r.status << " " << r.body);
    if (i <= 10) CHECK_MESSAGE(json_field(r.body, "status") == "claimed", "the first 10 users are claimed: " << r.body);
  }
  auto again = post_claim(port, R"({"user_id": "user-3", "message_id": "m-3-again"})");
  CHECK_MESSAGE(again.status == 200, again.body);
  CHECK_MESSAGE(again.body.find("already_claimed") != std::string::npos, again.body);
  auto unknown = post_claim(port, R"({"user_id": "user-99", "campaign": "no-such-campaign", "message_id": "m-99"})");
  CHECK_MESSAGE(unknown.status == 422, unknown.body);
  auto no_user = post_claim(port, R"({"campaign": "signup"})");
  CHECK_MESSAGE(no_user.status == 422, no_user.body);
  auto malformed = post_claim(port, "{not json");
  CHECK_MESSAGE(malformed.status == 400, malformed.body);
  auto huge = post_claim(port, std::string(100 * 1024, 'x'));
  CHECK_MESSAGE(huge.status == 413, huge.body);
  CHECK_MESSAGE(statuses[200] == 10, "10 claimed");
  CHECK_MESSAGE(statuses[409] == 4, "4 sold out");

  // Every owner's notification reaches the webhook.
  const bool notified = receiver.wait_until(
      [](const auto& seen) {
        std::set<std::string> keys;
        for (const auto& r : seen) keys.insert(r.header_key);
        return keys.size() >= 10;
      },
      30s);
  CHECK_MESSAGE(notified, "10 notifications within 30 s, got " << receiver.requests().size());

  auto metrics = http_call(port, http::verb::get, "/metrics");
  CHECK_MESSAGE(metrics.content_type.rfind("text/plain; version=0.0.4", 0) == 0, metrics.content_type);
  const auto& text = metrics.body;
  auto outcomes = [&](const char* status) {
    return static_cast<double>(
        db.count(fmt::format("SELECT count(*) FROM message_outcome WHERE status = '{}'", status)));
  };
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="claimed"})") ==
                    db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL"),
                text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="claimed"})") == outcomes("claimed"), text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="already_claimed"})") == outcomes("already_claimed"), text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="sold_out"})") == outcomes("sold_out"), text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="rejected"})") >= 1,
                "the unknown campaign's rejection is counted: " << text);

  ::kill(pid, SIGTERM);
  CHECK_MESSAGE(wait_exit(pid) == 0, "SIGTERM exits 0: " << read_file(log_path));
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'sent'") == 10,
                "all 10 notifications marked sent");
  std::filesystem::remove(log_path);
}

TEST_CASE("with the database away, POST /v1/claims answers 503 at once instead of keeping the client waiting") {
  const auto err_path = temp_path("http-db-down");
  // Nothing listens on port 9: the database is away for the whole run.
  const int pid = spawn_voucherd({"worker", "--source", "pg", "--http", "127.0.0.1:0", "--campaign", "away",
                                  "--database-url", "postgresql://postgres@127.0.0.1:9/away"},
                                 {}, err_path);
  const auto port = wait_for_http_port(err_path, pid, 30s);
  REQUIRE_MESSAGE(port.has_value(), "the worker serves HTTP without a database: ", read_file(err_path));
  const auto reply = http_call(*port, http::verb::post, "/v1/claims", R"({"user_id":"1"})", 30s);
  CHECK_MESSAGE(reply.status == 503, "a transient answer, got ", reply.status, " ", reply.body, reply.error);
  ::kill(pid, SIGTERM);
  CHECK(wait_exit(pid) == 0);
  std::filesystem::remove(err_path);
}
