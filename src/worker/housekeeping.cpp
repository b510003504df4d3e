#include "worker/housekeeping.hpp"

#include <fmt/format.h>

#include "common/json_log.hpp"

namespace voucherd {

housekeeping::housekeeping(std::string conninfo, transaction_pooling pooling, retention_config retention,
                           std::chrono::seconds prune_every, bool refresh_gauges, metrics& registry)
    : pruner_{std::move(conninfo), retention, std::move(pooling)}, prune_every_{prune_every}, refresh_gauges_{refresh_gauges},
      metrics_{registry} {}

housekeeping::~housekeeping() { stop(); }

void housekeeping::start() {
  if (thread_.joinable() || (prune_every_.count() <= 0 && !refresh_gauges_)) return;
  thread_ = std::thread{[this] { run(); }};
}

void housekeeping::stop() {
  {
    std::lock_guard lock{mutex_};
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void housekeeping::run() {
  using clock = std::chrono::steady_clock;
  auto next_prune = clock::now() + prune_every_;
  while (!stopping_) {
    if (prune_every_.count() > 0 && clock::now() >= next_prune) {
      next_prune = clock::now() + prune_every_;
      try {
        const auto deleted = pruner_.sweep({}, &stopping_);
        boost::json::object pruned;
        for (const auto kind : k_retained_kinds) {
          const auto n = deleted[static_cast<std::size_t>(kind)];
          metrics_.add_pruned(kind, n);
          pruned[to_string(kind)] = n;
        }
        log_json(log_level::info, "pruned", {{"pruned", std::move(pruned)}});
      } catch (const std::exception& e) {
        log_json(log_level::warn, fmt::format("prune failed, trying again in {} s: {}", prune_every_.count(), e.what()));
      }
    }
    if (refresh_gauges_) {
      try {
        const auto b = pruner_.read_backlog();
        metrics_.set_outbox_pending(b.outbox_pending);
        metrics_.set_outbox_oldest_pending(b.outbox_oldest_pending_s);
        metrics_.set_queue_pending(b.queue_pending);
        for (const auto kind : k_retained_kinds) metrics_.set_prunable(kind, b.prunable[static_cast<std::size_t>(kind)]);
      } catch (const std::exception& e) {
        log_json(log_level::warn, fmt::format("could not read the backlog for /metrics: {}", e.what()));
      }
    }
    auto wake_at = refresh_gauges_ ? clock::now() + k_gauge_period : next_prune;
    if (prune_every_.count() > 0) wake_at = std::min(wake_at, next_prune);
    std::unique_lock lock{mutex_};
    cv_.wait_until(lock, wake_at, [this] { return stopping_.load(); });
  }
}

}  // namespace voucherd
