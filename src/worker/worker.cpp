#include "worker/worker.hpp"

#include <unistd.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/json_log.hpp"
#include "db/pg_connection.hpp"
#include "db/schema_check.hpp"
#include "notify/outbox_bell.hpp"
#include "notify/outbox_dispatcher.hpp"
#include "worker/claim_loop.hpp"
#include "worker/housekeeping.hpp"
#include "worker/http_surface.hpp"

namespace voucherd {

struct worker::impl {
  worker_config config;
  std::unique_ptr<message_source> source;
  metrics& registry;
  asio::io_context io;
  // The claimer threads' own contexts (claimer_threads() - 1 of them).
  std::vector<std::unique_ptr<asio::io_context>> extra_ios;
  std::atomic<bool> stopping{false};
  std::atomic<int> running_claimers{0};
  claim_loop loop{config, registry, stopping};
  std::unique_ptr<http_surface> http;
  std::unique_ptr<outbox_dispatcher> dispatcher;
  std::unique_ptr<outbox_bell> bell;
  std::unique_ptr<housekeeping> keeper;

  impl(worker_config c, std::unique_ptr<message_source> s, metrics& m)
      : config{std::move(c)}, source{std::move(s)}, registry{m} {}

  // Starts claimer `index` on ctx, draining src.
  void spawn_claimer(asio::io_context& ctx, message_source& src, int index);
  void stop(const char* why);
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
  if (http) http->stop();
  // Bounded shutdown: whatever has not finished by then dies with its
  // connection, which rolls its transaction back.
  auto deadline = std::make_shared<asio::steady_timer>(io, config.shutdown_grace);
  deadline->async_wait([this, deadline](boost::system::error_code ec) {
    if (ec) return;
    log_json(log_level::warn, "shutdown grace period over; abandoning in-flight transactions");
    stop_all_contexts();
  });
}

void worker::impl::spawn_claimer(asio::io_context& ctx, message_source& src, int index) {
  ++running_claimers;
  asio::co_spawn(
      ctx,
      [this, &ctx, &src, index]() -> asio::awaitable<void> {
        co_await loop.run(ctx, src, index);
        if (--running_claimers > 0) co_return;
        log_json(log_level::info, "all claimers stopped");
        // The answers to the last HTTP claims may still be on their way to
        // their clients (sessions on the main io_context): give them until
        // they are written, at most the shutdown grace.
        if (http) {
          const auto until = std::chrono::steady_clock::now() + config.shutdown_grace;
          asio::steady_timer pause{ctx};
          while (http->answers_pending() > 0 && std::chrono::steady_clock::now() < until) {
            pause.expires_after(std::chrono::milliseconds{5});
            co_await pause.async_wait(asio::use_awaitable);
          }
        }
        stop_all_contexts();
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
}

namespace {

// One connection and a schema check before anything starts. A set-up no
// retry can fix (unknown database or role, failed authentication or
// certificate, schema missing or older than this binary) ends the worker
// here, exit 78 with what to do; a database that is merely away is waited
// for, as always, by the claimers' reconnects.
void check_database_at_start(const worker_config& config) {
  asio::io_context io;
  std::exception_ptr failure;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        pg_connection conn{io, config.database_url, config.deadlines};
        co_await conn.connect();
        co_await require_schema(conn);
      },
      [&](std::exception_ptr e) { failure = e; });
  io.run();
  if (!failure) return;
  try {
    std::rethrow_exception(failure);
  } catch (const voucherd_error& e) {
    if (e.kind() == failure_kind::config) throw;
    log_json(log_level::warn, "database not usable at start; claimers will keep trying", {{"error", e.what()}});
  }
}

}  // namespace

int worker::run() {
  auto& s = *impl_;
  check_database_at_start(s.config);
  // SIGHUP too: the session that started it went away; a hang-up ends it
  // gracefully rather than by the default action (at once, status 129).
  asio::signal_set signals{s.io, SIGINT, SIGTERM, SIGHUP};
  signals.async_wait([&s](boost::system::error_code ec, int signo) {
    if (!ec) s.stop(signo == SIGTERM ? "SIGTERM" : signo == SIGHUP ? "SIGHUP" : "SIGINT");
  });
  s.source->start(s.io);
  log_json(log_level::info, "worker starting",
           {{"source", s.source->name()}, {"concurrency", s.config.concurrency},
            {"threads", s.config.claimer_threads()}, {"batch", s.config.batch},
            {"http_batch", s.config.http.batch}, {"http_claimers", s.config.http_claimers()}, {"campaign", s.config.campaign}, {"pid", static_cast<std::int64_t>(::getpid())}});
  if (!s.config.notify.empty()) {
    auto notify = s.config.notify_settings();
    notify.listen_url = s.config.notify_listen_url;
    s.dispatcher = std::make_unique<outbox_dispatcher>(s.config.database_url, notify, s.registry,
                                                         s.config.pooling);
    s.dispatcher->start();
  }
  // Claims wake this worker's dispatcher at once and the others by NOTIFY.
  std::function<void()> wake_local;
  if (s.dispatcher) wake_local = [d = s.dispatcher.get()] { d->wake(); };
  // Its own application_name (the last setting of a conninfo wins): an
  // operator, or a test, can tell the bell's session from the claimers'.
  s.bell = std::make_unique<outbox_bell>(s.config.database_url + " application_name=voucherd-worker-bell",
                                         s.config.deadlines, std::move(wake_local));
  s.bell->start();
  s.loop.ring_after_claims(s.bell.get());
  s.keeper = std::make_unique<housekeeping>(s.config.database_url, s.config.pooling, s.config.retention, s.config.prune_every,
                                            !s.config.http_listen.empty(), s.registry);
  s.keeper->start();
  if (!s.config.http_listen.empty()) {
    s.http = std::make_unique<http_surface>(s.io, s.config, s.registry);
    s.http->start();
    for (int i = 0; i < s.config.http_claimers(); ++i) s.spawn_claimer(s.io, s.http->source(), i);
  }
  const int threads = s.config.claimer_threads();
  for (int t = 1; t < threads; ++t) s.extra_ios.push_back(std::make_unique<asio::io_context>(1));
  auto context_of = [&s, threads](int claimer) -> asio::io_context& {
    const int t = claimer % threads;
    return t == 0 ? s.io : *s.extra_ios[static_cast<std::size_t>(t - 1)];
  };
  for (int i = 0; i < s.config.concurrency; ++i) s.spawn_claimer(context_of(i), *s.source, i);
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
  if (s.http) s.http->stop();
  s.source->close();
  s.keeper->stop();
  s.bell->stop();
  if (s.dispatcher) s.dispatcher->stop();
  boost::json::object answered;
  for (auto status : {claim_status::claimed, claim_status::already_claimed, claim_status::sold_out,
                      claim_status::rejected})
    answered[to_string(status)] = static_cast<std::int64_t>(s.registry.claims(status));
  log_json(log_level::info, "worker stopped", {{"answered", std::move(answered)}});
  return 0;
}

}  // namespace voucherd
