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

#include "claim/claim_engine.hpp"
#include "http/http_server.hpp"
#include "notify/outbox_dispatcher.hpp"
#include "source/http_source.hpp"
#include "source/pg_queue_source.hpp"
#include "source/redis_source.hpp"
#include "source/stdin_source.hpp"
#include "sql_catalog.hpp"
#include "worker/backoff.hpp"
#include "worker/json_log.hpp"
#include "worker/pg_connection.hpp"

namespace voucherd {

namespace {

using clock_type = std::chrono::steady_clock;

// What one campaign's claims in a transaction tell the free-mark policy.
struct campaign_progress {
  std::int64_t campaign_id = 0;
  std::int64_t free_from = 0;
  std::int64_t highest_claimed = 0;
  bool saw_sold_out = false;
};

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t{co_await asio::this_coro::executor, d};
  co_await t.async_wait(asio::use_awaitable);
}

std::string join_lines(const std::vector<std::string>& items) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += '\n';
    out += items[i];
  }
  return out;
}

}  // namespace

std::unique_ptr<message_source> make_source(const worker_config& config) {
  const std::size_t capacity = static_cast<std::size_t>(config.concurrency) * config.batch * 2;
  switch (config.source) {
    case source_kind::stdin_lines: return std::make_unique<stdin_source>(0, stdout, capacity);
    case source_kind::pg: return std::make_unique<pg_queue_source>();
    case source_kind::redis: return std::make_unique<redis_source>(config.redis, capacity);
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
  free_mark_policy free_mark;
  std::unique_ptr<http_source> http;
  std::unique_ptr<http_server> server;
  std::unique_ptr<outbox_dispatcher> dispatcher;
  std::uint64_t seed = std::random_device{}();

  impl(worker_config c, std::unique_ptr<message_source> s, metrics& m)
      : config{std::move(c)}, source{std::move(s)}, registry{m} {}

  asio::awaitable<void> claimer(asio::io_context& ctx, message_source& src, int index);
  asio::awaitable<std::vector<claim_outcome>> claim_all(pg_connection& conn, message_source& src,
                                                        std::vector<delivery>& batch,
                                                        std::map<std::string, campaign_progress>& progress);
  asio::awaitable<void> advance_marks(pg_connection& conn, const std::map<std::string, campaign_progress>& progress);
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

asio::awaitable<std::vector<claim_outcome>> worker::impl::claim_all(
    pg_connection& conn, message_source& src, std::vector<delivery>& batch,
    std::map<std::string, campaign_progress>& progress) {
  std::vector<claim_outcome> outcomes(batch.size());
  std::vector<claim_request> requests(batch.size());
  // Valid messages, grouped by campaign in order of first appearance.
  std::vector<std::pair<std::string, std::vector<std::size_t>>> groups;
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
    requests[i] = std::get<claim_request>(std::move(parsed));
    requests[i].message_id = src.claim_message_id(batch[i], requests[i]);
    auto g = std::find_if(groups.begin(), groups.end(), [&](const auto& x) { return x.first == requests[i].campaign; });
    if (g == groups.end()) groups.push_back({requests[i].campaign, {i}});
    else g->second.push_back(i);
  }
  auto note = [&](const std::string& campaign, const pg_rows& rows, int row, const claim_outcome& o) {
    auto& p = progress[campaign];
    p.campaign_id = rows.int64(row, rows.column("campaign_id"));
    p.free_from = rows.int64(row, rows.column("free_from"));
    if (o.status == claim_status::claimed) p.highest_claimed = std::max(p.highest_claimed, *o.voucher_id);
    p.saw_sold_out = p.saw_sold_out || o.status == claim_status::sold_out;
  };
  for (auto& [campaign, members] : groups) {
    if (config.batch == 1 || members.size() == 1) {
      for (auto i : members) {
        const auto& r = requests[i];
        std::vector<pg_param> params{r.campaign, r.user_id, r.message_id};
        auto rows = co_await conn.exec(sql::claim_one, std::move(params));
        if (rows.empty()) {
          outcomes[i] = unknown_campaign_outcome(r);
          continue;
        }
        outcomes[i] = outcome_from_row(r, rows.text(0, rows.column("status")), rows.opt_int64(0, rows.column("voucher_id")),
                                       rows.is_null(0, rows.column("code")) ? "" : rows.text(0, rows.column("code")));
        note(campaign, rows, 0, outcomes[i]);
      }
      continue;
    }
    for (std::size_t start = 0; start < members.size(); start += claim_engine::k_max_batch) {
      const auto end = std::min(members.size(), start + claim_engine::k_max_batch);
      std::vector<std::string> users, messages;
      for (auto k = start; k < end; ++k) {
        users.push_back(requests[members[k]].user_id);
        messages.push_back(requests[members[k]].message_id);
      }
      std::vector<pg_param> params{campaign, join_lines(users), join_lines(messages)};
      auto rows = co_await conn.exec(sql::claim_batch, std::move(params));
      if (rows.empty()) {
        for (auto k = start; k < end; ++k) outcomes[members[k]] = unknown_campaign_outcome(requests[members[k]]);
        continue;
      }
      if (static_cast<std::size_t>(rows.size()) != end - start)
        throw voucherd_error{failure_kind::internal,
                             fmt::format("claim_batch returned {} rows for {} users", rows.size(), end - start)};
      const int status = rows.column("status"), voucher = rows.column("voucher_id"), code = rows.column("code");
      for (auto k = start; k < end; ++k) {
        const int row = static_cast<int>(k - start);
        auto& o = outcomes[members[k]];
        o = outcome_from_row(requests[members[k]], rows.text(row, status), rows.opt_int64(row, voucher),
                             rows.is_null(row, code) ? "" : rows.text(row, code));
        note(campaign, rows, row, o);
      }
    }
  }
  co_return outcomes;
}

asio::awaitable<void> worker::impl::advance_marks(pg_connection& conn,
                                                  const std::map<std::string, campaign_progress>& progress) {
  for (const auto& [name, p] : progress) {
    if (!free_mark.should_advance(p.campaign_id, p.free_from, p.highest_claimed, p.saw_sold_out)) continue;
    // The mark is an optimisation and the claims have committed: a failure
    // here only ends this transaction; a lost connection is the caller's.
    bool failed = false;
    conn.defer_simple(sql::worker_begin);
    try {
      std::vector<pg_param> params{std::to_string(p.campaign_id)};
      const auto locked = co_await conn.exec(sql::lock_campaign_nowait, params);
      if (!locked.empty()) co_await conn.exec(sql::advance_free_mark, std::move(params));
      co_await conn.exec_simple(sql::worker_commit);
    } catch (const pg_error& e) {
      if (e.lost_connection()) throw;
      failed = true;
    }
    if (failed) co_await conn.rollback();
  }
}

asio::awaitable<void> worker::impl::claimer(asio::io_context& ctx, message_source& src, int index) {
  pg_connection conn{ctx, config.database_url};
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
    std::vector<delivery> batch;
    bool in_transaction = false;
    std::chrono::milliseconds pause{0};
    try {
      // BEGIN goes out with the take (or, for sources that take from memory,
      // with the first claim): one round trip.
      conn.defer_simple(sql::worker_begin);
      in_transaction = true;
      const auto started = clock_type::now();
      batch = co_await src.take(conn, config.batch);
      if (batch.empty()) {
        in_transaction = false;
        co_await conn.rollback();
        if ((stopping && src.drained()) || src.finished()) break;
        co_await src.wait_for_work(conn);
        continue;
      }
      std::map<std::string, campaign_progress> progress;
      auto outcomes = co_await claim_all(conn, src, batch, progress);
      co_await src.record(conn, batch, outcomes);
      co_await conn.exec_simple(sql::worker_commit);
      in_transaction = false;
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
      batch.clear();
      co_await advance_marks(conn, progress);
    } catch (const pg_error& e) {
      if (e.lost_connection()) {
        pause = retry.next();
        log_json(log_level::warn, "database connection lost; messages given back",
                 {{"claimer", claimer_name}, {"error", e.what()}, {"messages", batch.size()}, {"retry_in_ms", pause.count()}});
        conn.close();
      } else if (e.worth_retrying()) {
        pause = std::chrono::milliseconds{std::uniform_int_distribution<int>{0, 5}(rng)};
      } else {
        pause = retry.next();
        log_json(log_level::error, "claim transaction failed; messages given back",
                 {{"claimer", claimer_name}, {"error", e.what()}, {"sqlstate", e.sqlstate()}, {"statement", e.statement()}});
      }
    } catch (const std::exception& e) {
      pause = retry.next();
      log_json(log_level::error, "claim transaction failed; messages given back",
               {{"claimer", claimer_name}, {"error", e.what()}});
    }
    if (in_transaction && conn.is_open()) {
      try {
        co_await conn.rollback();
      } catch (const std::exception&) {
        conn.close();
      }
    }
    if (!batch.empty()) src.abandoned(std::move(batch));
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
            pg_connection probe_conn{s.io, s.config.database_url};
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
