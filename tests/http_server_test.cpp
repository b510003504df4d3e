// The HTTP surface of SPEC section 5: each outcome's status code through a
// real claim against the test database, the readiness probe, the Prometheus
// text agreeing with the database, the body limit and loopback-only binding.
#include <doctest/doctest.h>

#include <atomic>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <fmt/format.h>

#include "claim/claim_core.hpp"
#include "db/classify.hpp"
#include "common/failure.hpp"
#include "claim/metrics.hpp"
#include "http/http_server.hpp"
#include "http/shared_readiness.hpp"
#include "support/test_db.hpp"

using namespace voucherd;
using namespace voucherd::test;

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// The test's claim path, standing in for the worker's: parse the message,
// claim with blocking_claimer on a real connection, record the metrics.
class claim_service {
 public:
  claim_service(std::string database_url, transaction_pooling pooling, metrics& registry)
      : url_{std::move(database_url)}, pooling_{std::move(pooling)}, metrics_{registry} {}

  void operator()(std::string body, std::function<void(claim_reply)> done) {
    const auto started = std::chrono::steady_clock::now();
    claim_reply reply = claim(body);
    if (reply.outcome)
      metrics_.record_claim(reply.outcome->status,
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    done(std::move(reply));
  }

 private:
  claim_reply claim(const std::string& body) {
    claim_reply reply;
    boost::system::error_code ec;
    const auto value = boost::json::parse(body, ec);
    if (ec || !value.is_object()) {
      reply.malformed = true;
      reply.error = ec ? ec.message() : "the message is not a JSON object";
      return reply;
    }
    const auto& message = value.as_object();
    claim_request request;
    request.campaign = "signup";
    if (auto* c = message.if_contains("campaign"); c && c->is_string()) request.campaign = c->as_string().c_str();
    if (auto* m = message.if_contains("message_id"); m && m->is_string()) request.message_id = m->as_string().c_str();
    request.source = "http";
    if (auto* u = message.if_contains("user_id")) {
      if (u->is_string()) request.user_id = u->as_string().c_str();
      else if (u->is_int64()) request.user_id = std::to_string(u->as_int64());
    }
    if (auto problem = request_problem(request)) {
      reply.outcome = rejected_outcome(request.campaign, request.user_id, *problem, request.message_id);
      return reply;
    }
    try {
      if (!db_) db_ = std::make_unique<blocking_claimer>(url_, pg_deadlines{}, pooling_);
      reply.outcome = db_->claim(request);
    } catch (const std::exception& e) {
      db_.reset();
      reply.failure = classify(e);
      reply.error = e.what();
    }
    return reply;
  }

  std::string url_;
  transaction_pooling pooling_;
  metrics& metrics_;
  std::unique_ptr<blocking_claimer> db_;
};

// A server on 127.0.0.1:0 with its io_context running on one thread.
struct running_server {
  running_server(claim_handler on_claim, readiness_probe probe, metrics& registry,
                 std::chrono::milliseconds request_timeout = http_server::k_request_timeout)
      : work{asio::make_work_guard(io)},
        server{io, "127.0.0.1:0", std::move(on_claim), std::move(probe), registry} {
    server.set_request_timeout(request_timeout);
    server.start();
    thread = std::thread{[this] { io.run(); }};
  }
  ~running_server() {
    server.stop();
    work.reset();
    io.stop();
    thread.join();
  }
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  http_server server;
  std::thread thread;
};

struct http_reply {
  unsigned status = 0;
  std::string body;
  std::string content_type;
  std::string allow;  // the Allow header (a 405's)
  boost::json::value json() const { return boost::json::parse(body); }
};

// A blocking HTTP/1.1 client on one keep-alive connection.
class client {
 public:
  explicit client(unsigned short port) : stream_{io_} { stream_.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), port}); }

  http_reply call(http::verb verb, const std::string& target, const std::string& body = {}) {
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    if (verb == http::verb::post) req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    http::write(stream_, req);
    http::response<http::string_body> res;
    http::read(stream_, buffer_, res);
    return {res.result_int(), res.body(), std::string{res[http::field::content_type]},
            std::string{res[http::field::allow]}};
  }
  http_reply post(const std::string& body) { return call(http::verb::post, "/v1/claims", body); }
  http_reply get(const std::string& target) { return call(http::verb::get, target); }

 private:
  asio::io_context io_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
};

std::string message(const std::string& user, const std::string& message_id = {}, const std::string& campaign = {}) {
  boost::json::object m;
  m["user_id"] = user;
  if (!message_id.empty()) m["message_id"] = message_id;
  if (!campaign.empty()) m["campaign"] = campaign;
  return boost::json::serialize(m);
}

// The value of one sample line of the Prometheus text, e.g.
// metric_value(text, "voucherd_claims_total{outcome=\"claimed\"}").
double metric_value(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

claim_handler claim_path(std::string database_url, transaction_pooling pooling, metrics& registry) {
  auto service = std::make_shared<claim_service>(std::move(database_url), std::move(pooling), registry);
  return [service](std::string body, std::function<void(claim_reply)> done) { (*service)(std::move(body), std::move(done)); };
}

claim_handler claim_path(const test_database& db, metrics& registry) { return claim_path(db.url(), db.pooling(), registry); }

readiness_probe always_ready() {
  return [](std::function<void(std::string)> answer) { answer(""); };
}

}  // namespace

TEST_CASE("POST /v1/claims answers each outcome with its status code") {
  test_database db;
  db.make_campaign("signup", 2);
  metrics registry;
  running_server srv{claim_path(db, registry), always_ready(), registry};
  client c{srv.server.port()};

  auto first = c.post(message("alice"));
  CHECK_MESSAGE(first.status == 200, first.body);
  CHECK_MESSAGE(first.json().at("status") == "claimed", first.body);
  CHECK_MESSAGE(first.content_type == "application/json", first.content_type);

  auto again = c.post(message("alice"));
  CHECK_MESSAGE(again.status == 200, again.body);
  CHECK_MESSAGE(again.json().at("status") == "already_claimed", again.body);
  CHECK_MESSAGE(again.json().at("code") == first.json().at("code"), "redelivery must return the same code: " << again.body);

  auto bob = c.post(message("bob"));
  CHECK_MESSAGE(bob.status == 200, bob.body);
  auto carol = c.post(message("carol"));
  CHECK_MESSAGE(carol.status == 409, carol.body);
  CHECK_MESSAGE(carol.json().at("status") == "sold_out", carol.body);

  auto unknown = c.post(message("dave", {}, "no-such-campaign"));
  CHECK_MESSAGE(unknown.status == 422, unknown.body);
  CHECK_MESSAGE(unknown.json().at("status") == "rejected", unknown.body);

  auto no_user = c.post(R"({"campaign":"signup"})");
  CHECK_MESSAGE(no_user.status == 422, no_user.body);
  CHECK_MESSAGE(no_user.json().at("reason").as_string().size() > 0, "a rejection carries its reason: " << no_user.body);

  auto bad_json = c.post("{\"user_id\": ");
  CHECK_MESSAGE(bad_json.status == 400, bad_json.body);
  CHECK_MESSAGE(bad_json.json().at("error") == "malformed", bad_json.body);
  auto not_object = c.post("[1,2]");
  CHECK_MESSAGE(not_object.status == 400, not_object.body);

  CHECK_MESSAGE(db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == 2,
                "only alice and bob own a voucher");
  CHECK_MESSAGE(db.count("SELECT count(*) FROM voucher_item WHERE user_id IN ('alice', 'bob')") == 2,
                "the owners are alice and bob");
}

TEST_CASE("POST /v1/claims answers 503 with Retry-After while the database is unreachable") {
  metrics registry;
  // A port nothing listens on: a real connection failure, classified transient.
  running_server srv{claim_path("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2", {}, registry),
                     always_ready(), registry};
  client c{srv.server.port()};
  auto r = c.post(message("alice"));
  CHECK_MESSAGE(r.status == 503, r.body);
  CHECK_MESSAGE(r.json().at("error") == "transient", r.body);
}

TEST_CASE("a body over 64 kB is refused with 413 before the claim path sees it") {
  metrics registry;
  std::atomic<int> handled{0};
  running_server srv{[&](std::string, std::function<void(claim_reply)> done) {
                       ++handled;
                       done(claim_reply{});
                     },
                     always_ready(), registry};
  client c{srv.server.port()};
  const std::string huge = message(std::string(http_server::k_max_body_bytes + 1000, 'x'));
  auto r = c.post(huge);
  CHECK_MESSAGE(r.status == 413, r.body);
  CHECK_MESSAGE(handled.load() == 0, "the handler must not run for an oversized body");
  // The server keeps serving.
  client again{srv.server.port()};
  CHECK_MESSAGE(again.get("/healthz").status == 200, "healthz after a refused body");
}

TEST_CASE("a request that cannot be parsed is answered 400 (431 for huge headers) and the connection closed") {
  // Until 2026-11-28 these connections were dropped without a word (curl:
  // "Empty reply from server"), and a 1.1 request without Host was served.
  metrics registry;
  std::atomic<int> claims{0};
  running_server srv{[&](std::string, std::function<void(claim_reply)> done) {
                       ++claims;
                       done(claim_reply{});
                     },
                     always_ready(), registry};
  // Sends `raw` on a new connection; what the server wrote until it closed.
  auto exchange = [&](const std::string& raw) {
    asio::io_context io;
    beast::tcp_stream stream{io};
    stream.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), srv.server.port()});
    asio::write(stream, asio::buffer(raw));
    stream.socket().shutdown(tcp::socket::shutdown_send);
    stream.expires_after(std::chrono::seconds{10});
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    beast::error_code ec;
    http::read(stream, buffer, res, ec);
    return std::pair{ec, res};
  };
  struct bad_case {
    std::string name;
    std::string raw;
    unsigned status;
    std::string reason;
  };
  for (const auto& c : std::vector<bad_case>{
           {"negative Content-Length", "POST /v1/claims HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400,
            "bad Content-Length"},
           {"two Content-Lengths", "POST /v1/claims HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            400, "Content-Length"},
           {"header over the limit", "GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + std::string(9000, 'a') + "\r\n\r\n", 431,
            "too large"},
           {"1.1 without Host", "POST /v1/claims HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 400, "Host"},
       }) {
    CAPTURE(c.name);
    const auto [ec, res] = exchange(c.raw);
    REQUIRE_MESSAGE(!ec, "an answer, not a dropped connection: ", ec.message());
    CHECK(res.result_int() == c.status);
    CHECK_MESSAGE(res.body().find(c.reason) != std::string::npos, res.body());
  }
  CHECK_MESSAGE(claims == 0, "none of them reached the claim path");
  // A 404 echoes a target that is not UTF-8 as valid JSON.
  const auto [ec, res] = exchange("GET /\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  REQUIRE(!ec);
  CHECK(res.result_int() == 404);
  boost::system::error_code json_ec;
  const auto body = boost::json::parse(res.body(), json_ec);
  REQUIRE_MESSAGE(!json_ec, res.body());
  CHECK(body.at("reason").as_string() == "/\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_CASE("Expect: 100-continue is answered 100 before the body is sent, then the request as usual") {
  // Until 2026-11-28 no 100 came: curl waited a second before sending its
  // body anyway, and a client that waits for the 100 waited for nothing.
  metrics registry;
  running_server srv{[](std::string body, std::function<void(claim_reply)> done) {
                       claim_reply reply;
                       reply.error = body;  // echoed, to show the body arrived
                       reply.malformed = true;
                       done(std::move(reply));
                     },
                     always_ready(), registry};
  asio::io_context io;
  beast::tcp_stream stream{io};
  stream.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), srv.server.port()});
  stream.expires_after(std::chrono::seconds{10});
  const std::string body = R"({"user_id":"patient"})";
  asio::write(stream, asio::buffer(fmt::format("POST /v1/claims HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                                               "Content-Length: {}\r\n\r\n",
                                               body.size())));
  beast::flat_buffer buffer;
  http::response<http::empty_body> interim;
  http::read(stream, buffer, interim);
  CHECK(interim.result() == http::status::continue_);
  asio::write(stream, asio::buffer(body));
  http::response<http::string_body> final_answer;
  http::read(stream, buffer, final_answer);
  CHECK(final_answer.result_int() == 400);
  CHECK_MESSAGE(final_answer.body().find("patient") != std::string::npos, final_answer.body());
}

TEST_CASE("/readyz behind shared_readiness: one probe for the requests that arrive while it runs, then a cached answer") {
  int calls = 0;
  std::vector<std::function<void(std::string)>> pending;
  const readiness_probe inner = [&](std::function<void(std::string)> answer) {
    ++calls;
    pending.push_back(std::move(answer));
  };
  const shared_readiness cached{inner, std::chrono::hours{1}};
  const auto probe = cached.probe();
  std::vector<std::string> answers;
  for (int i = 0; i < 10; ++i) probe([&](std::string why_not) { answers.push_back(why_not); });
  CHECK_MESSAGE(calls == 1, "ten requests while the database is probed: one probe");
  CHECK(answers.empty());
  pending.at(0)("the database is away");
  CHECK(answers == std::vector<std::string>(10, "the database is away"));
  probe([&](std::string why_not) { answers.push_back(why_not); });
  CHECK_MESSAGE(calls == 1, "a fresh answer is reused");
  CHECK(answers.size() == 11);

  const shared_readiness uncached{inner, std::chrono::milliseconds{0}};
  const auto again = uncached.probe();
  again([&](std::string why_not) { answers.push_back(why_not); });
  pending.at(1)("");
  again([&](std::string why_not) { answers.push_back(why_not); });
  CHECK_MESSAGE(calls == 3, "a stale answer is probed again");
  CHECK(answers.at(11).empty());
}

TEST_CASE("a client that stops sending mid-request is disconnected at the deadline") {
  metrics registry;
  running_server srv{[](std::string, std::function<void(claim_reply)> done) { done(claim_reply{}); },
                     always_ready(), registry, std::chrono::milliseconds{300}};
  asio::io_context io;
  beast::tcp_stream stream{io};
  stream.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), srv.server.port()});
  asio::write(stream, asio::buffer(std::string{"POST /v1/claims HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"}));
  // The client's own deadline is far longer than the server's.
  stream.expires_after(std::chrono::seconds{10});
  const auto started = std::chrono::steady_clock::now();
  char byte = 0;
  beast::error_code read_error;
  stream.async_read_some(asio::buffer(&byte, 1), [&](beast::error_code ec, std::size_t) { read_error = ec; });
  io.run();
  const auto waited = std::chrono::steady_clock::now() - started;
  CHECK_MESSAGE(read_error != beast::error::timeout, "the server, not the client, ended the connection");
  CHECK_MESSAGE((read_error == asio::error::eof || read_error == asio::error::connection_reset),
                "closed by the server: " << read_error.message());
  CHECK_MESSAGE(waited < std::chrono::seconds{5}, "closed near the 300 ms deadline");
}

TEST_CASE("/healthz, /readyz follow the probe, unknown paths and methods are 404 and 405") {
  metrics registry;
  std::atomic<bool> ready{false};
  running_server srv{[](std::string, std::function<void(claim_reply)> done) { done(claim_reply{}); },
                     [&](std::function<void(std::string)> answer) {
                       answer(ready.load() ? "" : "the database is taking a nap");
                     },
                     registry};
  client c{srv.server.port()};
  CHECK_MESSAGE(c.get("/healthz").status == 200, "healthz");
  auto not_ready = c.get("/readyz");
  CHECK_MESSAGE(not_ready.status == 503, not_ready.body);
  CHECK_MESSAGE(not_ready.body.find("the database is taking a nap") != std::string::npos,
                "/readyz says why: " << not_ready.body);
  ready = true;
  auto now_ready = c.get("/readyz");
  CHECK_MESSAGE(now_ready.status == 200, now_ready.body);
  CHECK_MESSAGE(c.get("/nope").status == 404, "unknown path");
  const auto get_claims = c.call(http::verb::get, "/v1/claims");
  CHECK_MESSAGE(get_claims.status == 405, "GET on the claim endpoint");
  CHECK_MESSAGE(get_claims.allow == "POST", "a 405 says what the path answers (RFC 9110)");
  const auto post_metrics = c.call(http::verb::post, "/metrics?x=1");
  CHECK_MESSAGE(post_metrics.status == 405, "POST on metrics");
  CHECK(post_metrics.allow == "GET, HEAD");
}

TEST_CASE("/metrics counters equal the database's counts after a run of claims") {
  test_database db;
  db.make_campaign("signup", 20);
  metrics registry;
  running_server srv{claim_path(db, registry), always_ready(), registry};
  client c{srv.server.port()};

  // 30 distinct users for 20 codes, every tenth one delivered twice, and a few
  // rejects: claimed, already_claimed, sold_out and rejected all occur.
  int rejected_sent = 0;
  for (int i = 1; i <= 30; ++i) {
    c.post(message(fmt::format("user-{}", i), fmt::format("m-{}", i)));
    if (i % 10 == 0) c.post(message(fmt::format("user-{}", i), fmt::format("m-{}-again", i)));
    if (i % 7 == 0) {
      c.post(message(fmt::format("user-{}", i), fmt::format("m-{}-bad", i), "no-such-campaign"));
      ++rejected_sent;
    }
  }
  auto scrape = c.get("/metrics");
  REQUIRE_MESSAGE(scrape.status == 200, scrape.body);
  CHECK_MESSAGE(scrape.content_type.rfind("text/plain; version=0.0.4", 0) == 0, scrape.content_type);
  const auto& text = scrape.body;

  auto outcomes = [&](const char* status) {
    return db.count(fmt::format("SELECT count(*) FROM message_outcome WHERE status = '{}'", status));
  };
  const auto claimed_rows = db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL");
  CHECK_MESSAGE(claimed_rows == 20, "the pool drained");
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="claimed"})") == claimed_rows, text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="claimed"})") == outcomes("claimed"), text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="already_claimed"})") ==
                    outcomes("already_claimed"),
                text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="sold_out"})") == outcomes("sold_out"), text);
  CHECK_MESSAGE(outcomes("sold_out") > 0, "some claims found the pool empty");
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="rejected"})") == rejected_sent, text);
  const auto total = static_cast<double>(claimed_rows + outcomes("already_claimed") + outcomes("sold_out") + rejected_sent);
  CHECK_MESSAGE(metric_value(text, "voucherd_claim_duration_seconds_count") == total, text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claim_duration_seconds_bucket{le="+Inf"})") == total, text);
  CHECK_MESSAGE(text.find("# TYPE voucherd_claim_duration_seconds histogram") != std::string::npos, text);
  CHECK_MESSAGE(metric_value(text, "voucherd_outbox_pending") >= 0, "outbox gauge present: " << text);
  CHECK_MESSAGE(metric_value(text, "voucherd_dead_letters_total") == 0, text);
  CHECK_MESSAGE(metric_value(text, "voucherd_queue_lag_seconds") >= 0, text);
}

TEST_CASE("start refuses a malformed or non-loopback address unless allowed") {
  metrics registry;
  asio::io_context io;
  auto handler = [](std::string, std::function<void(claim_reply)> done) { done(claim_reply{}); };
  for (const std::string bad : {"nonsense", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", "example.com:80",
                                "0.0.0.0:0", "[::]:0"}) {
    http_server server{io, bad, handler, always_ready(), registry};
    try {
      server.start();
      FAIL_CHECK("start() accepted " << bad);
    } catch (const voucherd_error& e) {
      CHECK_MESSAGE(e.kind() == failure_kind::usage, bad << ": " << e.what());
      CHECK_MESSAGE(std::string{e.what()}.find(bad) != std::string::npos, "the message names the address: " << e.what());
    }
  }
  http_server allowed{io, "0.0.0.0:0", handler, always_ready(), registry, /*allow_non_loopback=*/true};
  CHECK_NOTHROW(allowed.start());
  CHECK_MESSAGE(allowed.port() != 0, "port 0 picks a free port");
  http_server ipv6{io, "[::1]:0", handler, always_ready(), registry};
  CHECK_NOTHROW(ipv6.start());
}

TEST_CASE("a required bearer token lets start() listen beyond loopback; a token too short is refused") {
  metrics registry;
  asio::io_context io;
  auto handler = [](std::string, std::function<void(claim_reply)> done) { done(claim_reply{}); };
  http_server guarded{io, "0.0.0.0:0", handler, always_ready(), registry};
  guarded.require_bearer_token(bearer_token{"0123456789abcdef0123", "test"});
  CHECK_NOTHROW(guarded.start());
  CHECK_THROWS_AS(bearer_token("short", "test"), voucherd_error);
  const bearer_token token{"0123456789abcdef0123", "test"};
  CHECK(token.admits("Bearer 0123456789abcdef0123"));
  CHECK_MESSAGE(token.admits("bearer 0123456789abcdef0123"), "the scheme is case-insensitive");
  CHECK_FALSE(token.admits("Bearer 0123456789abcdef012"));
  CHECK_FALSE(token.admits("Bearer 0123456789abcdef01234"));
  CHECK_FALSE(token.admits("Basic 0123456789abcdef0123"));
  CHECK_FALSE(token.admits(""));
}
