#pragma once
// The outbox dispatcher: step 4 of the story (SPEC section 6). The claim
// transaction writes a notification_outbox row; this drains those rows and
// hands each to a sink (log, webhook, redis).
//
// How a pass works (sql/outbox_*.sql):
//  1. take: one short transaction picks up to batch_size due rows
//     (status 'pending', next_attempt_at <= the pass's start), oldest due
//     first in the order of the pending index, with FOR UPDATE SKIP LOCKED,
//     so any number of dispatchers (one per worker, plus `voucherd notify`)
//     share the outbox without waiting on each other, and leases them by
//     pushing next_attempt_at forward by the lease (batch_size x the sink's
//     timeout + 30 s: long enough for the whole batch to be delivered one by
//     one). No transaction stays open while a sink is called: a slow webhook
//     must not hold back vacuum. When stopping, the untried rest of a batch
//     is handed back at once.
//  2. deliver: each row goes to the sink, one at a time.
//  3. mark: every attempt adds 1 to attempts (so a row delivered at the
//     third try has attempts = 3); accepted -> status 'sent', sent_at;
//     refused -> last_error, next_attempt_at = now() + backoff, where backoff is
//     min(backoff_cap, backoff_base * 2^(attempts-1)) with +-jitter (a
//     fraction of it); after max_attempts attempts -> status 'failed'
//     (`voucherd stats` shows it as outbox_failed). A mark applies only while
//     the row is still pending with the attempts count it was taken with, so
//     a dispatcher whose lease ran out cannot overwrite another's result.
//
// Delivery is at-least-once. The window: the sink accepted a notification
// but the dispatcher died (or lost the database) before marking it sent; the
// lease expires and the row is delivered again (so the lease bounds how late
// such a repeat comes: 530 s with the defaults for a webhook, 40 s for the
// log sink). Every delivery carries the row's idempotency_key (stable per
// voucher and user), so a receiver that drops repeated keys sees each
// notification exactly once in effect (I3).
//
// Between passes (start()): after a pass that found nothing due, the
// dispatcher sleeps until the first of
//  - a NOTIFY on voucherd_outbox, when it has a listening connection
//    (listen_url: a direct URL, never a transaction pooler's), which workers
//    send after claims that wrote notifications (notify/outbox_bell.hpp);
//  - wake(), which the worker it runs in calls after such a commit;
//  - the next retry falling due (the earliest next_attempt_at of a pending row);
//  - the poll interval: poll_interval without a listening connection,
//    listen_poll_interval (a safety net, e.g. for `voucherd claim` run by
//    hand, which sends no NOTIFY) with one.
// A listening connection that fails is reopened before the next pass, which
// catches up on whatever was notified meanwhile; until it is back the
// dispatcher polls.
//
// A lost database connection is reopened with capped exponential backoff and
// jitter; the dispatcher never exits on a transient fault.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "claim/metrics.hpp"
#include "common/wake_event.hpp"
#include "db/connection_settings.hpp"

namespace voucherd {

enum class notify_sink_kind { log, webhook, redis };

inline constexpr const char* k_default_notify_stream = "voucherd:notifications";

// Defaults as named constants; filled by parse_notify_option() and flags.
struct notify_config {
  // 8 attempts 1, 2, 4, ... 64 s apart: a receiver may be down for about two
  // minutes before a notification ends 'failed'.
  static constexpr int k_default_max_attempts = 8;
  static constexpr std::chrono::milliseconds k_default_backoff_base{1000};
  static constexpr std::chrono::milliseconds k_default_backoff_cap{5 * 60 * 1000};
  static constexpr double k_default_jitter = 0.2;  // +-20% of each backoff
  static constexpr std::chrono::milliseconds k_default_webhook_timeout{5000};
  static constexpr std::chrono::milliseconds k_default_poll_interval{500};
  static constexpr std::chrono::milliseconds k_default_listen_poll_interval{10'000};
  static constexpr std::size_t k_default_batch_size = 100;

  notify_sink_kind sink = notify_sink_kind::log;
  // log: one JSON object per line on stderr, in the worker's log format
  //   {"level":"info","time":...,"message":"notification","idempotency_key":...,
  //    "user_id":...,"code":...,"campaign":...,"voucher_id":...}
  // (stderr, because stdout carries the outcome lines of `worker --source stdin`).
  std::string webhook_url;  // webhook: http[s]://HOST[:PORT][/PATH] (HTTP/1.1)
  // https webhooks: PEM certificates trusted besides the system store (a
  // private CA); empty = the system store alone.
  std::string webhook_ca_file;
  std::string redis_url;    // redis: redis://HOST[:PORT]
  std::string redis_stream = k_default_notify_stream;

  int max_attempts = k_default_max_attempts;  // >= 1; then the row ends 'failed'
  std::chrono::milliseconds backoff_base = k_default_backoff_base;
  std::chrono::milliseconds backoff_cap = k_default_backoff_cap;
  double jitter = k_default_jitter;  // 0..1
  // Per delivery, connect + request + response; used by the redis sink too.
  std::chrono::milliseconds webhook_timeout = k_default_webhook_timeout;
  // The longest idle wait between passes, without and with a listening connection.
  std::chrono::milliseconds poll_interval = k_default_poll_interval;
  std::chrono::milliseconds listen_poll_interval = k_default_listen_poll_interval;
  // libpq connection string for LISTEN (connection_settings::listen_conninfo());
  // "" = no LISTEN: poll every poll_interval.
  std::string listen_url;
  std::size_t batch_size = k_default_batch_size;                         // 1..1000

  // Throws voucherd_error(usage) naming the bad field.
  void validate() const;
};

// notify = "log" | "webhook:URL" | "redis"; redis_url is used by "redis"
// (default redis://127.0.0.1:6379 when empty). Throws voucherd_error(usage)
// with a precise message (unknown sink, missing or non-http URL, ...).
notify_config parse_notify_option(const std::string& notify, const std::string& redis_url);

class notification_sink;
class pg_listener;

class outbox_dispatcher {
 public:
  // pooling: behind a transaction pooler its session prepares nothing.
  outbox_dispatcher(std::string database_url, notify_config config, metrics& registry,
                    transaction_pooling pooling = {});
  ~outbox_dispatcher();  // stop()s
  outbox_dispatcher(const outbox_dispatcher&) = delete;
  outbox_dispatcher& operator=(const outbox_dispatcher&) = delete;

  // Runs passes on its own thread until stop(): after a pass that found
  // nothing due it sleeps (see above) until woken.
  void start();
  // Ends the current (or the next) idle wait at once: called after a commit
  // that wrote notifications. Thread-safe and cheap: it writes to an eventfd
  // only when no wake-up is pending already.
  // Finishes the in-flight delivery (and marks it), then returns. Idempotent.
  void stop();
  void wake() noexcept;

  // One pass, on the calling thread (not while start()'s thread runs): delivers every notification that is due
  // when the pass starts, each at most once per pass (a failed one waits for
  // its backoff and a later pass). Returns the number of delivery attempts
  // made. Throws on a database failure (start()'s loop retries those).
  std::size_t drain_once();

 private:
  struct pass_result {
    std::size_t attempts = 0;
    // Until the earliest pending row falls due; nullopt when none is pending.
    std::optional<std::chrono::milliseconds> next_due;
  };

  void run();
  pass_result pass(const std::atomic<bool>* stop_requested);
  // Sleeps between passes, at most `longest` (see the header comment).
  void idle(std::chrono::milliseconds longest);

  std::string database_url_;
  transaction_pooling pooling_;
  notify_config config_;
  metrics& metrics_;
  std::unique_ptr<notification_sink> sink_;
  struct connection;
  std::unique_ptr<connection> db_;
  std::unique_ptr<pg_listener> listener_;
  std::chrono::steady_clock::time_point listener_retry_at_{};
  std::chrono::milliseconds listener_retry_delay_{0};

  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> wake_pending_{false};
  wake_event wake_;
};

}  // namespace voucherd
