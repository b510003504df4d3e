// The HTTP surface end to end, through the real daemon: `voucherd worker
// --http 127.0.0.1:0 --notify webhook:URL` answers each outcome with its
// status code, its /metrics agree with the database after a run, the
// notifications of its claims reach the webhook, and SIGTERM stops it with 0.
#include <doctest/doctest.h>

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <fmt/format.h>

#include "notify_webhook_receiver.hpp"
#include "support/test_db.hpp"

using namespace voucherd;
using namespace voucherd::test;
using namespace std::chrono_literals;

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

struct http_reply {
  unsigned status = 0;
  std::string body;
  std::string content_type;
};

http_reply call(unsigned short port, http::verb verb, const std::string& target, const std::string& body = {}) {
  asio::io_context io;
  beast::tcp_stream stream{io};
  stream.connect(asio::ip::tcp::endpoint{asio::ip::make_address("127.0.0.1"), port});
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.body() = body;
  req.prepare_payload();
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(stream, buffer, res);
  return {res.result_int(), res.body(), std::string{res[http::field::content_type]}};
}

http_reply post(unsigned short port, const std::string& body) { return call(port, http::verb::post, "/v1/claims", body); }

std::string read_file(const std::string& path) {
  std::ifstream in{path};
  return {std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

// The port from the worker's "http listening" log line, waiting for it with a deadline.
unsigned short wait_for_port(const std::string& log_path, int pid) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    for (const auto& line : lines_of(read_file(log_path))) {
      if (line.find("http listening") == std::string::npos) continue;
      const auto j = boost::json::parse(line).as_object();
      return static_cast<unsigned short>(j.at("port").to_number<int>());
    }
    REQUIRE_MESSAGE(::kill(pid, 0) == 0, "the worker exited early: " << read_file(log_path));
    std::this_thread::sleep_for(20ms);
  }
  FAIL("no 'http listening' line within 20 s: " << read_file(log_path));
  return 0;
}

double sample(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

}  // namespace

TEST_CASE("voucherd worker --http answers each outcome, its metrics match the database, its claims are notified") {
  test_database db;
  db.make_campaign("signup", 10);
  webhook_receiver receiver{[](const std::string&, int) { return webhook_receiver::answer{200}; }};
  const auto log_path = (std::filesystem::temp_directory_path() / fmt::format("vd-http-worker-{}.log", ::getpid())).string();
  const int pid = spawn_voucherd({"worker", "--source", "pg", "--campaign", "signup", "--concurrency", "2", "--http",
                                  "127.0.0.1:0", "--notify", "webhook:" + receiver.url(), "--database-url", db.url()},
                                 {}, log_path);
  const auto port = wait_for_port(log_path, pid);

  CHECK_MESSAGE(call(port, http::verb::get, "/healthz").status == 200, "healthz");
  auto ready = call(port, http::verb::get, "/readyz");
  CHECK_MESSAGE(ready.status == 200, "readyz with the database up: " << ready.body);

  // 14 users for 10 codes, with repeats, rejects and malformed bodies.
  std::map<unsigned, int> statuses;
  for (int i = 1; i <= 14; ++i) {
    auto r = post(port, fmt::format(R"({{"user_id": "user-{}", "message_id": "m-{}"}})", i, i));
    ++statuses[r.status];
    CHECK_MESSAGE((r.status == 200 || r.status == 409), "claim " << i << ": " << r.status << " " << r.body);
    if (i <= 10) {
      const auto j = boost::json::parse(r.body).as_object();
      CHECK_MESSAGE(j.at("status") == "claimed", r.body);
    }
  }
  auto again = post(port, R"({"user_id": "user-3", "message_id": "m-3-again"})");
  CHECK_MESSAGE(again.status == 200, again.body);
  CHECK_MESSAGE(again.body.find("already_claimed") != std::string::npos, again.body);
  auto unknown = post(port, R"({"user_id": "user-99", "campaign": "no-such-campaign", "message_id": "m-99"})");
  CHECK_MESSAGE(unknown.status == 422, unknown.body);
  auto no_user = post(port, R"({"campaign": "signup"})");
  CHECK_MESSAGE(no_user.status == 422, no_user.body);
  auto malformed = post(port, "{not json");
  CHECK_MESSAGE(malformed.status == 400, malformed.body);
  auto huge = post(port, std::string(100 * 1024, 'x'));
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

  auto metrics = call(port, http::verb::get, "/metrics");
  CHECK_MESSAGE(metrics.content_type.rfind("text/plain; version=0.0.4", 0) == 0, metrics.content_type);
  const auto& text = metrics.body;
  auto outcomes = [&](const char* status) {
    return static_cast<double>(
        db.count(fmt::format("SELECT count(*) FROM message_outcome WHERE status = '{}'", status)));
  };
  CHECK_MESSAGE(sample(text, R"(voucherd_claims_total{outcome="claimed"})") ==
                    db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL"),
                text);
  CHECK_MESSAGE(sample(text, R"(voucherd_claims_total{outcome="claimed"})") == outcomes("claimed"), text);
  CHECK_MESSAGE(sample(text, R"(voucherd_claims_total{outcome="already_claimed"})") == outcomes("already_claimed"), text);
  CHECK_MESSAGE(sample(text, R"(voucherd_claims_total{outcome="sold_out"})") == outcomes("sold_out"), text);
  CHECK_MESSAGE(sample(text, R"(voucherd_claims_total{outcome="rejected"})") >= 1,
                "the unknown campaign's rejection is counted: " << text);

  ::kill(pid, SIGTERM);
  CHECK_MESSAGE(wait_exit(pid) == 0, "SIGTERM exits 0: " << read_file(log_path));
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'sent'") == 10,
                "all 10 notifications marked sent");
  std::filesystem::remove(log_path);
}
