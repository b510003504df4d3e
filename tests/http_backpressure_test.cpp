// POST /v1/claims under load, through the real daemon: waiting requests share
// one transaction (group commit), and past the bounds (--http-queue-max,
// --http-deadline-ms) a request is answered 503 with Retry-After and is
// never claimed afterwards. The claims are stalled deterministically by a
// session holding LOCK TABLE voucher_item, not by timing; every case ends
// with the owners in the database equal to the users answered 200, and I1-I3.
#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "support/files.hpp"
#include "support/http_client.hpp"
#include "support/json_field.hpp"
#include "support/prometheus.hpp"
#include "support/test_db.hpp"
#include "support/wait.hpp"

using namespace voucherd;
using namespace voucherd::test;
using namespace std::chrono_literals;

namespace http = boost::beast::http;

namespace {

// A worker serving HTTP for campaign "promo", its claims allowed to wait on a
// lock far longer than any case holds one.
struct http_worker {
  http_worker(const test_database& db, std::vector<std::string> extra) {
    std::vector<std::string> args{"worker",          "--source",      "pg",          "--campaign",
                                  "promo",           "--http",        "127.0.0.1:0", "--lock-timeout-ms",
                                  "120000",          "--statement-timeout-ms", "120000", "--database-url",
                                  db.url()};
    args.insert(args.end(), extra.begin(), extra.end());
    pid = spawn_voucherd(args, {}, log_path);
    const auto found = wait_for_http_port(log_path, pid, 20s);
    REQUIRE_MESSAGE(found.has_value(), "the worker listens within 20 s: " << read_file(log_path));
    port = *found;
  }
  ~http_worker() {
    ::kill(pid, SIGTERM);
    wait_exit(pid);
  }
  double metric(const std::string& series) const { return metric_value(metrics_text(), series); }
  std::string metrics_text() const { return http_call(port, http::verb::get, "/metrics").body; }

  std::string log_path = temp_path("http-backpressure");
  int pid = 0;
  unsigned short port = 0;
};

// A session holding LOCK TABLE voucher_item until release(): every claim waits.
struct pool_lock {
  explicit pool_lock(const test_database& db) : conn{db.connect()}, tx{std::make_unique<pqxx::work>(*conn)} {
    tx->exec("LOCK TABLE voucher_item IN EXCLUSIVE MODE");
  }
  void release() {
    if (tx) tx->commit();
    tx.reset();
  }
  std::unique_ptr<pqxx::connection> conn;
  std::unique_ptr<pqxx::work> tx;
};

// Claimer sessions of this database waiting on a lock (the ones pool_lock stalls).
std::int64_t lock_waiters(const test_database& db) {
  return db.count(fmt::format("SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock'",
                              db.name()));
}

// Concurrent POSTs, one thread and connection each; answers by user.
struct clients {
  void post(unsigned short port, const std::string& user) {
    threads.emplace_back([this, port, user] {
      auto reply = http_call(port, http::verb::post, "/v1/claims", fmt::format(R"({{"user_id":"{}"}})", user));
      std::lock_guard lock{mutex};
      replies[user] = std::move(reply);
      ++answered;
    });
  }
  void join() {
    for (auto& t : threads) t.join();
    threads.clear();
  }
  std::set<std::string> users_with(unsigned status) {
    std::set<std::string> out;
    for (const auto& [user, reply] : replies)
      if (reply.status == status) out.insert(user);
    return out;
  }

  std::vector<std::thread> threads;
  std::mutex mutex;
  std::map<std::string, http_reply> replies;
  std::atomic<int> answered{0};
};

// Posts one request and waits until a claimer took it and waits on the lock
// (the `stalled`-th claimer to do so).
void stall_claimer(const test_database& db, const http_worker& w, clients& c, const std::string& user, int stalled) {
  c.post(w.port, user);
  REQUIRE_MESSAGE(wait_until([&] { return lock_waiters(db) >= stalled; }, 30s),
                  "a claimer took " << user << " and waits on the lock");
}

std::set<std::string> owners(const test_database& db) {
  std::set<std::string> out;
  auto conn = db.connect();
  pqxx::nontransaction tx{*conn};
  for (const auto& r : tx.exec("SELECT user_id FROM voucher_item WHERE user_id IS NOT NULL")) out.insert(r[0].c_str());
  return out;
}

void check_turned_away(const http_reply& reply, const std::string& why) {
  CHECK_MESSAGE(reply.status == 503, "answered 503: " << reply.status << " " << reply.body << reply.error);
  CHECK_MESSAGE(reply.retry_after == "1", "with Retry-After: 1: '" << reply.retry_after << "'");
  CHECK_MESSAGE(json_field(reply.body, "overload") == why, "the body says " << why << ": " << reply.body);
}

void check_owners_are_the_200s(const test_database& db, clients& c) {
  CHECK_MESSAGE(owners(db) == c.users_with(200), "the owners are exactly the users answered 200");
  auto conn = db.connect();
  const auto problems = audit_campaign(*conn, "promo");
  CHECK_MESSAGE(problems.empty(), describe(problems));
}

// A worker with one claimer, its claim of user "first" stalled on the pool
// lock, and room for `queue_max` requests to wait behind it.
struct stalled_worker {
  explicit stalled_worker(int queue_max)
      : w{(db.make_campaign("promo", 100), db),
          {"--concurrency", "1", "--batch", "1", "--http-queue-max", std::to_string(queue_max), "--http-deadline-ms",
           "600000"}},
        lock{db} {
    stall_claimer(db, w, c, "first", 1);
  }
  test_database db;
  http_worker w;
  pool_lock lock;
  clients c;
};

}  // namespace

TEST_CASE("requests beyond --http-queue-max are answered 503 with Retry-After and never claimed") {
  stalled_worker s{2};
  auto& [db, w, lock, c] = s;
  for (int i = 0; i < 10; ++i) c.post(w.port, fmt::format("user-{}", i));
  // Two wait in the queue, eight are turned away at once while the lock holds.
  REQUIRE_MESSAGE(wait_until([&] { return c.answered == 8; }, 60s), "eight answered while claims stall");
  CHECK_MESSAGE(w.metric("voucherd_http_overload_total{reason=\"queue_full\"}") == 8, "metrics count them");
  CHECK_MESSAGE(w.metric("voucherd_http_waiting") == 2, "two wait");
  lock.release();
  c.join();

  const auto turned_away = c.users_with(503);
  CHECK_MESSAGE(turned_away.size() == 8, "eight answered 503");
  for (const auto& user : turned_away) check_turned_away(c.replies[user], "queue_full");
  CHECK_MESSAGE(c.users_with(200).size() == 3, "the claimer's one and the two waiting are claimed");
  check_owners_are_the_200s(db, c);
}

TEST_CASE("a request still unclaimed at --http-deadline-ms is answered 503 and never claimed; a claimed one is not") {
  test_database db;
  db.make_campaign("promo", 100);
  http_worker w{db, {"--concurrency", "1", "--batch", "1", "--http-deadline-ms", "300"}};
  pool_lock lock{db};
  clients c;
  stall_claimer(db, w, c, "first", 1);
  for (int i = 0; i < 3; ++i) c.post(w.port, fmt::format("late-{}", i));
  // The lock holds until all three passed their deadline and were answered.
  REQUIRE_MESSAGE(wait_until([&] { return c.answered == 3; }, 60s), "the waiting three are answered");
  CHECK_MESSAGE(w.metric("voucherd_http_overload_total{reason=\"deadline\"}") == 3, "metrics count them");
  CHECK_MESSAGE(w.metric("voucherd_http_waiting") == 0, "none waits any more");
  lock.release();
  c.join();

  for (int i = 0; i < 3; ++i) check_turned_away(c.replies[fmt::format("late-{}", i)], "deadline");
  CHECK_MESSAGE(c.replies["first"].status == 200,
                "the claimed request outlives its deadline and gets its claim: " << c.replies["first"].body);
  check_owners_are_the_200s(db, c);
  CHECK_MESSAGE(owners(db) == std::set<std::string>{"first"}, "only the claimed request owns a voucher");
}

TEST_CASE("concurrent requests share commits: without --batch, waiting requests are claimed together") {
  test_database db;
  db.make_campaign("promo", 100);
  http_worker w{db, {"--concurrency", "2"}};
  pool_lock lock{db};
  clients c;
  constexpr int k_clients = 40;
  // Each claimer takes one request and stalls on the lock with it; the rest wait.
  for (int i = 0; i < 2; ++i) stall_claimer(db, w, c, fmt::format("user-{}", i), i + 1);
  for (int i = 2; i < k_clients; ++i) c.post(w.port, fmt::format("user-{}", i));
  REQUIRE_MESSAGE(wait_until([&] { return w.metric("voucherd_http_waiting") == k_clients - 2; }, 60s),
                  "the other requests wait in the queue");
  std::this_thread::sleep_for(200ms);  // each of the waiting ones waits at least this long
  lock.release();
  c.join();

  // voucherd_http_wait_seconds: every request taken once; the two stalled
  // ones were taken at once, the other 38 only after the lock was gone.
  CHECK_MESSAGE(w.metric("voucherd_http_wait_seconds_count") == k_clients, "each request's wait is recorded once");
  const auto quick = w.metric(R"(voucherd_http_wait_seconds_bucket{le="0.1"})");
  CHECK_MESSAGE((quick >= 0 && quick <= 2), "only the two stalled requests were taken within 100 ms: " << quick);
  CHECK_MESSAGE(w.metric("voucherd_http_wait_seconds_sum") >= (k_clients - 2) * 0.2,
                "the waiting requests' time in the queue is counted: " << w.metric("voucherd_http_wait_seconds_sum"));
  // What a Prometheus server would scrape passes its own checker (promtool,
  // Debian package prometheus): the text parses, and names fit their types.
  const auto scraped = temp_path("metrics");
  std::ofstream{scraped} << w.metrics_text();
  const int rc = std::system(fmt::format("promtool check metrics < '{0}' > '{0}.out' 2>&1", scraped).c_str());
  CHECK_MESSAGE(rc == 0, "promtool check metrics: " << read_file(scraped + ".out"));

  CHECK_MESSAGE(c.users_with(200).size() == k_clients, "every request is claimed");
  check_owners_are_the_200s(db, c);
  // Each claim's transaction id is its voucher row's xmin.
  const auto transactions = db.count("SELECT count(DISTINCT xmin::text) FROM voucher_item WHERE user_id IS NOT NULL");
  // Two stalled single claims, then the 38 waiting in at most two batches of up to 50.
  CHECK_MESSAGE(transactions <= 4, k_clients << " claims committed in " << transactions << " transactions");
}

TEST_CASE("a client that sends again at once on the connection its 503 came on is read after Retry-After") {
  // wrk -c4000 on a full queue sends each next request the moment its 503
  // arrives. Reading and turning those away as fast as they came took the
  // thread the claims run on: 19,513 claims in 10 s, against 172,411 once
  // the connection waits out its Retry-After before it is read again.
  stalled_worker s{1};
  auto& [db, w, lock, c] = s;
  c.post(w.port, "second");  // waits in the queue, which is full now
  REQUIRE_MESSAGE(wait_until([&] { return w.metric("voucherd_http_waiting") == 1; }, 30s), "one waits");

  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket{io};
  socket.connect({boost::asio::ip::make_address("127.0.0.1"), w.port});
  const timeval read_limit{60, 0};  // a worker that never answers ends the test, not the run
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &read_limit, sizeof read_limit);
  boost::beast::flat_buffer buffer;
  const auto call = [&](const std::string& user) {
    http::request<http::string_body> req{http::verb::post, "/v1/claims", 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    req.body() = fmt::format(R"({{"user_id":"{}"}})", user);
    req.prepare_payload();
    http::write(socket, req);
    http::response<http::string_body> res;
    http::read(socket, buffer, res);
    return res;
  };
  const auto first = call("third");
  CHECK(first.result_int() == 503);
  CHECK(first[http::field::retry_after] == "1");
  CHECK(first.keep_alive());
  const auto sent = std::chrono::steady_clock::now();
  const auto again = call("fourth");
  const auto waited = std::chrono::steady_clock::now() - sent;
  CHECK(again.result_int() == 503);
  // A lower bound only: a slow machine makes the wait longer, never shorter.
  CHECK_MESSAGE(waited >= 900ms, "the next request was read after "
                                     << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count() << " ms");
  lock.release();
  c.join();
  CHECK(c.users_with(200) == std::set<std::string>{"first", "second"});
  check_owners_are_the_200s(db, c);
}
