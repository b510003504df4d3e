#pragma once
// The worker's housekeeping thread: keeps the gauges of what is waiting
// (outbox_pending, outbox_oldest_pending_seconds, queue_pending,
// prunable_rows) fresh for /metrics, and with --prune-every runs a
// retention sweep (maintenance/retention.hpp) on that period. One
// connection of its own, opened when first needed and reopened after a
// failure; a failure is logged and tried again next round, never fatal:
// housekeeping must not stop claims.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "claim/metrics.hpp"
#include "maintenance/retention.hpp"

namespace voucherd {

class housekeeping {
 public:
  static constexpr std::chrono::seconds k_gauge_period{5};

  // prune_every 0 = no pruning; refresh_gauges: whether anyone reads them (--http).
  housekeeping(std::string conninfo, transaction_pooling pooling, retention_config retention,
               std::chrono::seconds prune_every, bool refresh_gauges, metrics& registry);
  ~housekeeping();  // stop()s

  void start();
  // Ends a sweep in progress after its current batch. Idempotent.
  void stop();

 private:
  void run();

  retention_pruner pruner_;
  std::chrono::seconds prune_every_;
  bool refresh_gauges_;
  metrics& metrics_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::condition_variable cv_;
  std::thread thread_;
};

}  // namespace voucherd
