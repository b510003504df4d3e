#pragma once
// The process's metrics registry, rendered as Prometheus text by GET /metrics.
//
// One object per process, shared by reference (the worker's claimers, the
// outbox dispatcher, the HTTP server). Every member function is thread-safe:
// counters and gauges are atomics, the histograms are fixed sets of atomic
// buckets, so recording never blocks a claimer.
//
// Exposed series (all prefixed voucherd_):
//   claims_total{outcome="claimed|already_claimed|sold_out|rejected"}  counter
//   claim_duration_seconds                                            histogram
//   queue_lag_seconds          gauge: age of the oldest message still queued
//   outbox_pending             gauge: notifications waiting for delivery
//   outbox_oldest_pending_seconds gauge: age of the oldest of them
//   queue_pending              gauge: messages waiting in the pg queue
//   prunable_rows{kind="sent_notifications|done_messages|outcomes|dead_letters"}
//                              gauge: rows older than the retention (voucherd prune)
//   pruned_rows_total{kind=...}  counter: rows the worker's --prune-every deleted
//   dead_letters_total         counter: messages sent to a dead-letter queue
//   notification_attempts_total{result="delivered|failed"}            counter
//   http_overload_total{reason="queue_full|deadline"}  counter: POST /v1/claims
//                              answered 503 unclaimed (http_source's back-pressure)
//   http_waiting               gauge: POST /v1/claims requests waiting unclaimed
//   http_wait_seconds          histogram: how long a POST /v1/claims request
//                              waited before a claimer took it (the rest of its
//                              time on the server is claim_duration_seconds)
#include <array>
#include <atomic>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>

#include "claim/claim_outcome.hpp"

namespace voucherd {

// What `voucherd prune` deletes, one kind per table (maintenance/retention.hpp).
enum class retained_kind { sent_notifications, done_messages, outcomes, dead_letters };
inline constexpr retained_kind k_retained_kinds[] = {retained_kind::sent_notifications, retained_kind::done_messages,
                                                      retained_kind::outcomes, retained_kind::dead_letters};
const char* to_string(retained_kind kind);

// Why an HTTP claim was answered 503 without being claimed: the waiting queue
// was full when it arrived, or it was still waiting at its deadline.
enum class http_overload { queue_full, deadline };
const char* to_string(http_overload reason);

// Upper bounds (seconds) of the latency histograms; +Inf is implied.
inline constexpr std::array<double, 12> k_latency_buckets{
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5};

// A Prometheus histogram of durations over k_latency_buckets: atomic buckets
// and an atomic sum in microseconds, so recording never blocks.
class latency_histogram {
 public:
  void record(double seconds);
  // Appends the HELP, TYPE, _bucket, _sum and _count lines of series `name`.
  void render(std::string& out, std::string_view name, std::string_view help) const;

 private:
  std::array<std::atomic<std::uint64_t>, k_latency_buckets.size() + 1> buckets_{};  // last = +Inf
  std::atomic<std::uint64_t> sum_us_{0};
};

class metrics {
 public:
  // One claim's outcome and its wall time (from taking the message to commit).
  void record_claim(claim_status status, double seconds);
  void set_queue_lag(double seconds);
  void set_outbox_pending(std::int64_t pending);
  void set_outbox_oldest_pending(double seconds);
  void set_queue_pending(std::int64_t pending);
  void set_prunable(retained_kind kind, std::int64_t rows);
  void add_pruned(retained_kind kind, std::uint64_t rows);
  void add_dead_letter();
  // One delivery attempt of a notification: delivered = the sink accepted it,
  // false = a failed attempt (it will be retried, or ends `failed`).
  void add_notification(bool delivered);
  void add_http_overload(http_overload reason);
  void set_http_waiting(std::int64_t waiting);
  // A POST /v1/claims request taken by a claimer, after waiting this long.
  void record_http_wait(double seconds);

  // Prometheus text exposition format 0.0.4.
  std::string prometheus_text() const;

  // Read back for tests and logs.
  std::uint64_t claims(claim_status status) const;
  std::uint64_t notifications(bool delivered) const;
  std::uint64_t dead_letters() const { return dead_letters_.load(); }
  std::uint64_t http_overloads(http_overload reason) const;

 private:
  static constexpr std::size_t k_statuses = 4;
  std::array<std::atomic<std::uint64_t>, k_statuses> claims_{};
  latency_histogram claim_duration_;
  std::atomic<double> queue_lag_{0.0};
  std::atomic<std::int64_t> outbox_pending_{0};
  std::atomic<double> outbox_oldest_pending_{0.0};
  std::atomic<std::int64_t> queue_pending_{0};
  static constexpr std::size_t k_kinds = std::size(k_retained_kinds);
  std::array<std::atomic<std::int64_t>, k_kinds> prunable_{};
  std::array<std::atomic<std::uint64_t>, k_kinds> pruned_{};
  std::atomic<std::uint64_t> dead_letters_{0};
  std::atomic<std::uint64_t> notifications_delivered_{0};
  std::atomic<std::uint64_t> notifications_failed_{0};
  std::array<std::atomic<std::uint64_t>, 2> http_overloads_{};
  std::atomic<std::int64_t> http_waiting_{0};
  latency_histogram http_wait_;
};

}  // namespace voucherd
