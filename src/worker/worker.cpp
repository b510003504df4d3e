#include "worker/worker.hpp"

#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include "claim/claim_core.hpp"
#include "http/http_server.hpp"
#include "notify/outbox_dispatcher.hpp"
#include "source/http_source.hpp"
#include "source/pg_queue_source.hpp"
#include "source/redis_source.hpp"
#include "source/stdin_source.hpp"
#include "sql_catalog.hpp"
#include "worker/backoff.hpp"
#include "worker/json_log.hpp"
#include "db/pg_connection.hpp"

namespace voucherd {

namespace {

using clock_type = std::chrono::steady_clock;

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t{co_await asio::this_coro::executor, d};
  co_await t.async_wait(asio::use_awaitable);
}

// How a claim transaction ended.
enum class ending {
  committed,
  retry_at_once,  // a concurrent duplicate committed first, a deadlock: run it again
  unavailable,    // the database cannot be used now (lost, read-only, ...): back off, blame no message
  timed_out,      // a statement or lock wait ran out: the database is slow, or one message is
  refused,        // the database refused a message (a constraint, a trigger): that message is poison
};

struct transaction_result {
  ending how = ending::committed;
  std::string error;  // what the database said, when not committed
};

}  // namespace

std::unique_ptr<message_source> make_source(const worker_config& config) {
  const std::size_t capacity = static_cast<std::size_t>(config.concurrency) * config.batch * 2;
  switch (config.source) {
    case source_kind::stdin_lines: return std::make_unique<stdin_source>(0, stdout, capacity);
    case source_kind::pg: return std::make_unique<pg_queue_source>();
    case source_kind::redis: {
      auto redis = config.redis;
      redis.max_deliveries = config.max_deliveries;
      return std::make_unique<redis_source>(redis, capacity);
    }
  }
  return nullptr;
}

struct worker::impl {
  worker_config config;
  std::unique_ptr<message_source> source;
  metrics& registry;
  asio::io_context io;
  // The claimer threads' own contexts (claimer_threads() - 1 of them).
  std::vector<std::unique_ptr<asio::io_context>> extra_ios;
  std::atomic<bool> stopping{false};
  std::atomic<int> running_claimers{0};
  claim_core core;  // shared by every claimer (its free-mark policy is thread-safe)
  std::unique_ptr<http_source> http;
  std::unique_ptr<http_server> server;
  std::unique_ptr<outbox_dispatcher> dispatcher;
  std::uint64_t seed = std::random_device{}();

  impl(worker_config c, std::unique_ptr<message_source> s, metrics& m)
      : config{std::move(c)}, source{std::move(s)}, registry{m} {}

  asio::awaitable<void> claimer(asio::io_context& ctx, message_source& src, int index);
  // Claims a taken batch, records it and commits, in the transaction whose
  // BEGIN went out with the take; rolls back on failure. Acknowledges what
  // committed and moves the free marks.
  asio::awaitable<transaction_result> finish_transaction(pg_connection& conn, message_source& src,
                                                         std::vector<delivery>& batch, clock_type::time_point started);
  // One delivery in a transaction of its own (taken again with retake).
  asio::awaitable<transaction_result> try_alone(pg_connection& conn, message_source& src, delivery& d);
  // Splits a batch that failed for one of its messages (or kept colliding
  // with concurrent claims of its users) and tries each delivery alone.
  // Returns a pause for the claimer.
  asio::awaitable<std::chrono::milliseconds> split(pg_connection& conn, message_source& src,
                                                   std::vector<delivery> batch, backoff& retry);
  // Suspects are only ever tried alone, each try counted before it runs.
  asio::awaitable<std::chrono::milliseconds> try_suspects(pg_connection& conn, message_source& src,
                                                          std::vector<delivery> suspects, backoff& retry);
  // A delivery whose try alone failed for its own sake: counts the try
  // (unless counted before it ran), then gives it back, or gives it up.
  asio::awaitable<std::chrono::milliseconds> blame(pg_connection& conn, message_source& src, delivery d,
                                                   const std::string& error, bool counted, backoff& retry);
  // Records a rejected outcome for a delivery the claim never reached, in a
  // transaction of its own.
  asio::awaitable<void> give_up(pg_connection& conn, message_source& src, delivery d);
  // Gives deliveries back after the database turned out unusable.
  void give_back(message_source& src, std::vector<delivery>& batch, std::size_t from);

  // Committed claim transactions of this worker: when other messages commit
  // while one keeps timing out, the message is what is slow.
  std::atomic<std::uint64_t> commits{0};

  void stop(const char* why);
  void claimer_done();
  void stop_all_contexts();
};

worker::worker(worker_config config, std::unique_ptr<message_source> source, metrics& registry)
    : impl_{std::make_unique<impl>(std::move(config), std::move(source), registry)} {}

worker::~worker() = default;

void worker::impl::stop_all_contexts() {
  io.stop();
  for (auto& ctx : extra_ios) ctx->stop();
}

void worker::impl::stop(const char* why) {
  if (stopping.exchange(true)) return;
  log_json(log_level::info, "stopping", {{"reason", why}});
  source->stop_intake();
  if (server) server->stop();
  // Bounded shutdown: whatever has not finished by then dies with its
  // connection, which rolls its transaction back.
  auto deadline = std::make_shared<asio::steady_timer>(io, config.shutdown_grace);
  deadline->async_wait([this, deadline](boost::system::error_code ec) {
    if (ec) return;
    log_json(log_level::warn, "shutdown grace period over; abandoning in-flight transactions");
    stop_all_contexts();
  });
}

void worker::impl::claimer_done() {
  if (--running_claimers > 0) return;
  log_json(log_level::info, "all claimers stopped");
  stop_all_contexts();
}

asio::awaitable<transaction_result> worker::impl::finish_transaction(pg_connection& conn, message_source& src,
                                                                    std::vector<delivery>& batch,
                                                                    clock_type::time_point started) {
  std::vector<claim_outcome> outcomes(batch.size());
  // The messages that parse go to the claim core; the others are answered here.
  std::vector<claim_request> requests;
  std::vector<std::size_t> claimed_index;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].poison) {
      outcomes[i] = rejected_outcome({}, {}, *batch[i].poison);
      continue;
    }
    auto parsed = parse_message(batch[i].body, batch[i].oversized, config.campaign);
    if (auto* rejected = std::get_if<claim_outcome>(&parsed)) {
      outcomes[i] = std::move(*rejected);
      continue;
    }
    auto request = std::get<claim_request>(std::move(parsed));
    request.message_id = src.claim_message_id(batch[i], request);
    requests.push_back(std::move(request));
    claimed_index.push_back(i);
  }
  claim_progress progress;
  transaction_result result;
  bool in_transaction = true;
  try {
    auto claimed = co_await core.claim(conn, requests, config.batch > 1, progress);
    for (std::size_t k = 0; k < claimed.size(); ++k) outcomes[claimed_index[k]] = std::move(claimed[k]);
    co_await src.record(conn, batch, outcomes);
    co_await conn.exec_simple(sql::worker_commit);
    in_transaction = false;
  } catch (const pg_error& e) {
    result.error = e.what();
    if (e.worth_retrying()) result.how = ending::retry_at_once;
    else if (e.lost_connection()) result.how = ending::unavailable;
    else if (is_timeout(e.sqlstate())) result.how = ending::timed_out;
    else if (refuses_message(e.sqlstate(), e.constraint())) result.how = ending::refused;
    else result.how = ending::unavailable;
    if (e.lost_connection()) conn.close();
  } catch (const std::exception& e) {
    result.error = e.what();
    result.how = ending::unavailable;
  }
  if (result.how != ending::committed) {
    if (in_transaction && conn.is_open()) {
      try {
        co_await conn.rollback();
      } catch (const std::exception&) {
        conn.close();
      }
    }
    co_return result;
  }
  ++commits;
  // Committed: only now may the source acknowledge.
  const double seconds = std::chrono::duration<double>(clock_type::now() - started).count();
  double lag = 0;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    registry.record_claim(outcomes[i].status, seconds);
    if (batch[i].dead_lettered) registry.add_dead_letter();
    lag = std::max(lag, batch[i].lag_seconds);
  }
  registry.set_queue_lag(lag);
  src.committed(batch, outcomes);
  try {
    co_await core.advance_marks(conn, progress);
  } catch (const std::exception&) {
    conn.close();  // the claims committed; the next loop reconnects
  }
  co_return result;
}

void worker::impl::give_back(message_source& src, std::vector<delivery>& batch, std::size_t from) {
  if (from >= batch.size()) return;
  std::vector<delivery> rest(std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(from)),
                             std::make_move_iterator(batch.end()));
  src.abandoned(std::move(rest), true);
}

asio::awaitable<transaction_result> worker::impl::try_alone(pg_connection& conn, message_source& src, delivery& d) {
  std::vector<delivery> alone;
  std::optional<transaction_result> failed;
  try {
    conn.defer_simple(sql::worker_begin);
    const auto started = clock_type::now();
    std::vector<delivery> one{d};
    alone = co_await src.retake(conn, std::move(one));
    if (alone.empty()) {
      co_await conn.rollback();  // done or taken by another claimer meanwhile
      co_return transaction_result{};
    }
    alone.front().attempts = d.attempts;
    alone.front().last_error = d.last_error;
    auto result = co_await finish_transaction(conn, src, alone, started);
    co_return result;
  } catch (const std::exception& e) {
    failed = transaction_result{ending::unavailable, e.what()};
  }
  conn.close();  // the state of the transaction is unknown: start afresh
  co_return *failed;
}

asio::awaitable<std::chrono::milliseconds> worker::impl::blame(pg_connection& conn, message_source& src, delivery d,
                                                               const std::string& error, bool counted,
                                                               backoff& retry) {
  int attempts = 0;
  try {
    attempts = co_await src.note_attempt(conn, d, counted ? 0 : 1, error);
  } catch (const std::exception& e) {
    conn.close();
    std::vector<delivery> back{std::move(d)};
    src.abandoned(std::move(back), true);
    co_return retry.next();
  }
  if (attempts == 0) co_return std::chrono::milliseconds{0};  // no longer ours
  if (attempts >= config.max_deliveries) {
    co_await give_up(conn, src, std::move(d));
    co_return std::chrono::milliseconds{0};
  }
  log_json(log_level::warn, "a message failed alone; it will be tried alone again",
           {{"message_id", d.id}, {"attempts", attempts}, {"max_deliveries", config.max_deliveries},
            {"error", error}});
  std::vector<delivery> back{std::move(d)};
  src.abandoned(std::move(back), false);
  co_return retry.next();
}

asio::awaitable<std::chrono::milliseconds> worker::impl::split(pg_connection& conn, message_source& src,
                                                               std::vector<delivery> batch, backoff& retry) {
  const auto commits_before = commits.load();
  std::vector<std::pair<delivery, std::string>> timed_out;
  std::chrono::milliseconds pause{0};
  for (std::size_t k = 0; k < batch.size(); ++k) {
    if (!conn.is_open()) {
      give_back(src, batch, k);
      co_return retry.next();
    }
    auto result = co_await try_alone(conn, src, batch[k]);
    switch (result.how) {
      case ending::committed: break;
      case ending::retry_at_once: {
        std::vector<delivery> back{std::move(batch[k])};
        src.abandoned(std::move(back), false);
        break;
      }
      case ending::unavailable:
        // Not this message: the database. The rest waits for it too.
        give_back(src, batch, k);
        for (auto& [d, e] : timed_out) {
          std::vector<delivery> back{std::move(d)};
          src.abandoned(std::move(back), true);
        }
        co_return retry.next();
      case ending::refused:
        pause = std::max(pause, co_await blame(conn, src, std::move(batch[k]), result.error, false, retry));
        break;
      case ending::timed_out: timed_out.emplace_back(std::move(batch[k]), result.error); break;
    }
  }
  // A timeout is the message's own when others committed meanwhile (its
  // neighbours alone, or other claimers); otherwise the database is slow.
  const bool others_committed = commits.load() > commits_before;
  for (auto& [d, e] : timed_out) {
    if (others_committed) {
      pause = std::max(pause, co_await blame(conn, src, std::move(d), e, false, retry));
    } else {
      std::vector<delivery> back{std::move(d)};
      src.abandoned(std::move(back), true);
      pause = std::max(pause, retry.next());
    }
  }
  co_return pause;
}

asio::awaitable<std::chrono::milliseconds> worker::impl::try_suspects(pg_connection& conn, message_source& src,
                                                                      std::vector<delivery> suspects,
                                                                      backoff& retry) {
  std::chrono::milliseconds pause{0};
  for (std::size_t k = 0; k < suspects.size(); ++k) {
    auto& d = suspects[k];
    if (!conn.is_open()) {
      give_back(src, suspects, k);
      co_return retry.next();
    }
    int attempts = 0;
    try {
      // Counted before the try, where the count survives a crash on it.
      attempts = co_await src.note_attempt(conn, d, 1, std::nullopt);
    } catch (const std::exception&) {
      conn.close();
      give_back(src, suspects, k);
      co_return retry.next();
    }
    if (attempts == 0) continue;  // done, or another claimer holds it
    if (attempts > config.max_deliveries) {
      // Counted before a try that never came back (the worker died on it).
      co_await give_up(conn, src, std::move(d));
      continue;
    }
    auto result = co_await try_alone(conn, src, d);
    switch (result.how) {
      case ending::committed: break;
      case ending::retry_at_once: {
        std::vector<delivery> back{std::move(d)};
        src.abandoned(std::move(back), false);
        break;
      }
      case ending::unavailable:
        give_back(src, suspects, k);
        co_return retry.next();
      case ending::refused:
      case ending::timed_out:
        pause = std::max(pause, co_await blame(conn, src, std::move(d), result.error, true, retry));
        break;
    }
  }
  co_return pause;
}

asio::awaitable<void> worker::impl::give_up(pg_connection& conn, message_source& src, delivery d) {
  // Rejected with the database's error, like any bad message.
  claim_request who;
  auto parsed = parse_message(d.body, d.oversized, config.campaign);
  if (auto* r = std::get_if<claim_request>(&parsed)) {
    who = std::move(*r);
    who.message_id = src.claim_message_id(d, who);
  }
  const auto reason = fmt::format("claim failed {} times: {}", d.attempts,
                                  d.last_error.empty() ? "no error was recorded" : d.last_error);
  log_json(log_level::error, "a message failed every try; rejected and dead-lettered",
           {{"message_id", d.id}, {"attempts", d.attempts}, {"error", d.last_error}});
  std::vector<claim_outcome> outcomes;
  outcomes.push_back(rejected_outcome(who.campaign, who.user_id, reason, who.message_id));
  std::vector<delivery> again;
  bool failed = false;
  try {
    conn.defer_simple(sql::worker_begin);
    std::vector<delivery> one{std::move(d)};
    again = co_await src.retake(conn, std::move(one));
    if (again.empty()) {
      co_await conn.rollback();
      co_return;
    }
    co_await src.record(conn, again, outcomes);
    co_await conn.exec_simple(sql::worker_commit);
  } catch (const std::exception& e) {
    log_json(log_level::warn, "could not record a rejected message; it stays pending", {{"error", e.what()}});
    failed = true;
  }
  if (failed) {
    conn.close();  // state unknown; the claimer reconnects
    src.abandoned(std::move(again), true);
    co_return;
  }
  for (std::size_t i = 0; i < again.size(); ++i) {
    registry.record_claim(outcomes[i].status, 0.0);
    if (again[i].dead_lettered) registry.add_dead_letter();
  }
  src.committed(again, outcomes);
}

asio::awaitable<void> worker::impl::claimer(asio::io_context& ctx, message_source& src, int index) {
  pg_connection conn{ctx, config.database_url, config.deadlines};
  backoff retry{seed + static_cast<std::uint64_t>(index)};
  std::mt19937_64 rng{seed ^ static_cast<std::uint64_t>(index * 7919)};
  const auto claimer_name = fmt::format("{}-{}", src.name(), index);
  // On stop, a claimer finishes what the source already read into memory,
  // unless it has no database to finish it with.
  while (!(stopping && (src.drained() || !conn.is_open())) && !src.finished()) {
    if (!conn.is_open()) {
      std::optional<std::chrono::milliseconds> wait;
      try {
        co_await conn.connect();
        co_await src.on_connect(conn);
        if (retry.attempts() > 0) log_json(log_level::info, "database connection restored", {{"claimer", claimer_name}});
        retry.reset();
      } catch (const std::exception& e) {
        wait = retry.next();
        if (retry.attempts() == 1 || retry.attempts() % 20 == 0)
          log_json(log_level::warn, "cannot connect to the database; retrying",
                   {{"claimer", claimer_name}, {"error", e.what()}, {"retry_in_ms", wait->count()}, {"attempt", retry.attempts()}});
        conn.close();
      }
      if (wait) {
        co_await sleep_for(*wait);
        continue;
      }
    }
    std::vector<delivery> batch, suspects;
    std::chrono::milliseconds pause{0};
    transaction_result result;
    const auto commits_before = commits.load();
    try {
      // BEGIN goes out with the take (or, for sources that take from memory,
      // with the first claim): one round trip.
      conn.defer_simple(sql::worker_begin);
      const auto started = clock_type::now();
      batch = co_await src.take(conn, config.batch);
      if (batch.empty()) {
        co_await conn.rollback();
        if ((stopping && src.drained()) || src.finished()) break;
        co_await src.wait_for_work(conn);
        continue;
      }
      // A message that failed alone before is only ever tried alone again,
      // each try counted: it never fails a batch twice.
      const auto healthy_end = std::stable_partition(batch.begin(), batch.end(),
                                                     [](const delivery& d) { return d.attempts == 0; });
      suspects.assign(std::make_move_iterator(healthy_end), std::make_move_iterator(batch.end()));
      batch.erase(healthy_end, batch.end());
      if (batch.empty()) co_await conn.rollback();  // releases the suspects for try_suspects to take again
      else result = co_await finish_transaction(conn, src, batch, started);
    } catch (const std::exception& e) {
      // The take or the idle wait failed: nothing was claimed.
      result = {ending::unavailable, e.what()};
      conn.close();
    }
    try {
      switch (result.how) {
        case ending::committed: break;
        case ending::retry_at_once:
          if (batch.size() > 1) {
            // A batch can keep colliding with concurrent claims of one user or
            // another; alone, each message converges (already_claimed).
            pause = co_await split(conn, src, std::move(batch), retry);
            break;
          }
          src.abandoned(std::move(batch), false);
          pause = std::chrono::milliseconds{std::uniform_int_distribution<int>{0, 5}(rng)};
          break;
        case ending::unavailable:
          pause = retry.next();
          log_json(log_level::warn, conn.is_open() ? "claim transaction failed; messages given back"
                                                   : "database connection lost; messages given back",
                   {{"claimer", claimer_name}, {"error", result.error}, {"messages", batch.size()},
                    {"retry_in_ms", pause.count()}});
          src.abandoned(std::move(batch), true);
          break;
        case ending::timed_out:
        case ending::refused:
          if (batch.size() > 1) {
            log_json(log_level::warn, "claim transaction failed; trying its messages one by one",
                     {{"claimer", claimer_name}, {"error", result.error}, {"messages", batch.size()}});
            pause = co_await split(conn, src, std::move(batch), retry);
          } else if (result.how == ending::refused || commits.load() > commits_before) {
            // Alone already: refused, or timed out while other claims went through.
            pause = co_await blame(conn, src, std::move(batch.front()), result.error, false, retry);
          } else {
            pause = retry.next();  // timed out with nothing else getting through: the database is slow
            src.abandoned(std::move(batch), true);
          }
          break;
      }
      if (!suspects.empty()) {
        if (result.how == ending::unavailable) src.abandoned(std::move(suspects), true);
        else pause = std::max(pause, co_await try_suspects(conn, src, std::move(suspects), retry));
      }
    } catch (const std::exception& e) {
      // split, blame and try_suspects handle the database's failures
      // themselves; this is a bug. Log it and carry on with a fresh
      // connection rather than end the worker.
      log_json(log_level::error, "claimer failed while handling a failed transaction",
               {{"claimer", claimer_name}, {"error", e.what()}});
      conn.close();
      pause = retry.next();
    }
    if (pause.count() > 0) co_await sleep_for(pause);
  }
  claimer_done();
}

int worker::run() {
  auto& s = *impl_;
  asio::signal_set signals{s.io, SIGINT, SIGTERM};
  signals.async_wait([&s](boost::system::error_code ec, int signo) {
    if (!ec) s.stop(signo == SIGTERM ? "SIGTERM" : "SIGINT");
  });
  s.source->start(s.io);
  log_json(log_level::info, "worker starting",
           {{"source", s.source->name()}, {"concurrency", s.config.concurrency},
            {"threads", s.config.claimer_threads()}, {"batch", s.config.batch},
            {"campaign", s.config.campaign}, {"pid", static_cast<std::int64_t>(::getpid())}});
  if (!s.config.notify.empty()) {
    s.dispatcher = std::make_unique<outbox_dispatcher>(
        s.config.database_url, parse_notify_option(s.config.notify, s.config.notify_redis_url), s.registry);
    s.dispatcher->start();
  }
  if (!s.config.http_listen.empty()) {
    s.http = std::make_unique<http_source>(s.config.campaign, s.registry);
    s.http->start(s.io);
    auto probe = [&s](std::function<void(bool)> answer) {
      asio::co_spawn(
          s.io,
          [&s, answer]() -> asio::awaitable<void> {
            pg_connection probe_conn{s.io, s.config.database_url, s.config.deadlines};
            bool ready = false;
            try {
              co_await probe_conn.connect();
              ready = true;
            } catch (const std::exception&) {
            }
            answer(ready);
          },
          asio::detached);
    };
    s.server = std::make_unique<http_server>(
        s.io, s.config.http_listen,
        [&s](std::string body, std::function<void(claim_reply)> done) { s.http->submit(std::move(body), std::move(done)); },
        probe, s.registry);
    s.server->start();
    log_json(log_level::info, "http listening", {{"listen", s.config.http_listen}, {"port", s.server->port()}});
    for (int i = 0; i < s.config.concurrency; ++i) {
      ++s.running_claimers;
      asio::co_spawn(s.io, s.claimer(s.io, *s.http, i), asio::detached);
    }
  }
  const int threads = s.config.claimer_threads();
  for (int t = 1; t < threads; ++t) s.extra_ios.push_back(std::make_unique<asio::io_context>(1));
  auto context_of = [&s, threads](int claimer) -> asio::io_context& {
    const int t = claimer % threads;
    return t == 0 ? s.io : *s.extra_ios[static_cast<std::size_t>(t - 1)];
  };
  for (int i = 0; i < s.config.concurrency; ++i) {
    ++s.running_claimers;
    auto& ctx = context_of(i);
    asio::co_spawn(ctx, s.claimer(ctx, *s.source, i), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);
    });
  }
  std::exception_ptr thread_failure;
  std::mutex thread_failure_mutex;
  {
    std::vector<std::jthread> claimer_threads;
    for (auto& ctx : s.extra_ios)
      claimer_threads.emplace_back([&s, &ctx, &thread_failure, &thread_failure_mutex] {
        try {
          ctx->run();
        } catch (...) {
          const std::lock_guard lock{thread_failure_mutex};
          if (!thread_failure) thread_failure = std::current_exception();
          s.stop_all_contexts();
        }
      });
    s.io.run();
    // The main context ends when every claimer has (or on the grace
    // deadline); the others are stopped with it.
    s.stop_all_contexts();
  }
  if (thread_failure) std::rethrow_exception(thread_failure);
  if (s.server) s.server->stop();
  s.source->close();
  if (s.dispatcher) s.dispatcher->stop();
  log_json(log_level::info, "worker stopped", {{"claims", static_cast<std::int64_t>(
      s.registry.claims(claim_status::claimed) + s.registry.claims(claim_status::already_claimed) +
      s.registry.claims(claim_status::sold_out) + s.registry.claims(claim_status::rejected))}});
  return 0;
}

}  // namespace voucherd
