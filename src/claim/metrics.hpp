#pragma once
// The process's metrics registry, rendered as Prometheus text by GET /metrics.
//
// One object per process, shared by reference (the worker's claimers, the
// outbox dispatcher, the HTTP server). Every member function is thread-safe:
// counters and gauges are atomics, the histogram is a fixed set of atomic
// buckets, so recording never blocks a claimer.
//
// Exposed series (all prefixed voucherd_):
//   claims_total{outcome="claimed|already_claimed|sold_out|rejected"}  counter
//   claim_duration_seconds                                            histogram
//   queue_lag_seconds          gauge: age of the oldest message still queued
//   outbox_pending             gauge: notifications waiting for delivery
//   dead_letters_total         counter: messages sent to a dead-letter queue
//   notification_attempts_total{result="delivered|failed"}            counter
#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "claim/claim_outcome.hpp"

namespace voucherd {

class metrics {
 public:
  // Upper bounds (seconds) of the claim latency histogram; +Inf is implied.
  static constexpr std::array<double, 12> k_latency_buckets{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5};

  // One claim's outcome and its wall time (from taking the message to commit).
  void record_claim(claim_status status, double seconds);
  void set_queue_lag(double seconds);
  void set_outbox_pending(std::int64_t pending);
  void add_dead_letter();
  // One delivery attempt of a notification: delivered = the sink accepted it,
  // false = a failed attempt (it will be retried, or ends `failed`).
  void add_notification(bool delivered);

  // Prometheus text exposition format 0.0.4.
  std::string prometheus_text() const;

  // Read back for tests and logs.
  std::uint64_t claims(claim_status status) const;
  std::uint64_t notifications(bool delivered) const;
  std::uint64_t dead_letters() const { return dead_letters_.load(); }

 private:
  static constexpr std::size_t k_statuses = 4;
  std::array<std::atomic<std::uint64_t>, k_statuses> claims_{};
  std::array<std::atomic<std::uint64_t>, k_latency_buckets.size() + 1> latency_buckets_{};  // last = +Inf
  std::atomic<std::uint64_t> latency_count_{0};
  std::atomic<std::uint64_t> latency_sum_us_{0};  // microseconds, so the sum stays an atomic integer
  std::atomic<double> queue_lag_{0.0};
  std::atomic<std::int64_t> outbox_pending_{0};
  std::atomic<std::uint64_t> dead_letters_{0};
  std::atomic<std::uint64_t> notifications_delivered_{0};
  std::atomic<std::uint64_t> notifications_failed_{0};
};

}  // namespace voucherd
