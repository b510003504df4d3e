#include "notify/outbox_bell.hpp"

#include <memory>

#include <fmt/format.h>

#include "common/json_log.hpp"
#include "db/pg_notifier.hpp"
#include "sql_catalog.hpp"

namespace voucherd {

outbox_bell::outbox_bell(std::string conninfo, pg_deadlines deadlines, std::function<void()> local_wake,
                         std::chrono::milliseconds interval)
    : conninfo_{std::move(conninfo)}, deadlines_{deadlines}, local_wake_{std::move(local_wake)}, interval_{interval} {}

outbox_bell::~outbox_bell() { stop(); }

void outbox_bell::start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread{[this] { run(); }};
}

void outbox_bell::stop() {
  {
    std::lock_guard lock{mutex_};
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void outbox_bell::ring() noexcept {
  if (local_wake_) local_wake_();
  if (rung_.exchange(true)) return;
  {
    std::lock_guard lock{mutex_};
  }
  cv_.notify_one();
}

void outbox_bell::run() {
  std::unique_ptr<pg_notifier> db;
  bool failing = false;
  for (;;) {
    {
      std::unique_lock lock{mutex_};
      cv_.wait(lock, [this] { return rung_.load() || stopping_.load(); });
    }
    // Cleared before the NOTIFY goes out: a ring while it is sent is owed another.
    if (!rung_.exchange(false)) return;  // stopping, nothing owed
    try {
      if (!db) db = std::make_unique<pg_notifier>(conninfo_, deadlines_);
      db->run(sql::outbox_notify);  // a transaction of its own (autocommit)
      failing = false;
    } catch (const std::exception& e) {
      db.reset();
      if (!failing)  // once per outage, not once per interval
        log_json(log_level::warn, fmt::format("outbox bell: cannot send NOTIFY (listening dispatchers fall back to "
                                              "their poll): {}", e.what()));
      failing = true;
    }
    std::unique_lock lock{mutex_};
    if (cv_.wait_for(lock, interval_, [this] { return stopping_.load(); }) && !rung_.load()) return;
  }
}

}  // namespace voucherd
