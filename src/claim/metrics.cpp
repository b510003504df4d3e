#include "claim/metrics.hpp"

#include <cmath>

#include <fmt/format.h>

namespace voucherd {

namespace {

constexpr claim_status k_all_statuses[] = {claim_status::claimed, claim_status::already_claimed,
                                           claim_status::sold_out, claim_status::rejected};

std::size_t index_of(claim_status status) { return static_cast<std::size_t>(status); }

// Prometheus wants Go-style floats: "+Inf", and no trailing zeros needed.
std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  return fmt::format("{}", v);
}

}  // namespace

const char* to_string(retained_kind kind) {
  switch (kind) {
    case retained_kind::sent_notifications: return "sent_notifications";
    case retained_kind::done_messages: return "done_messages";
    case retained_kind::outcomes: return "outcomes";
    case retained_kind::dead_letters: return "dead_letters";
  }
  return "?";
}

void latency_histogram::record(double seconds) {
  if (!(seconds >= 0)) seconds = 0;  // also catches NaN
  std::size_t bucket = k_latency_buckets.size();
  for (std::size_t i = 0; i < k_latency_buckets.size(); ++i)
    if (seconds <= k_latency_buckets[i]) {
      bucket = i;
      break;
    }
  buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(static_cast<std::uint64_t>(std::llround(seconds * 1e6)), std::memory_order_relaxed);
}

void latency_histogram::render(std::string& out, std::string_view name, std::string_view help) const {
  // Buckets are cumulative in the exposition format and _count is the +Inf
  // bucket, so the two always agree; _sum, read last, may already hold a
  // concurrent record the buckets were read without.
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= k_latency_buckets.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    const double le = i < k_latency_buckets.size() ? k_latency_buckets[i] : INFINITY;
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, number(le), cumulative);
  }
  out += fmt::format("{}_sum {}\n", name, number(static_cast<double>(sum_us_.load(std::memory_order_relaxed)) / 1e6));
  out += fmt::format("{}_count {}\n", name, cumulative);
}

void metrics::record_claim(claim_status status, double seconds) {
  claims_[index_of(status)].fetch_add(1, std::memory_order_relaxed);
  claim_duration_.record(seconds);
}

void metrics::record_http_wait(double seconds) { http_wait_.record(seconds); }

void metrics::set_queue_lag(double seconds) { queue_lag_.store(seconds, std::memory_order_relaxed); }

void metrics::set_outbox_pending(std::int64_t pending) {
  outbox_pending_.store(pending, std::memory_order_relaxed);
}

void metrics::set_outbox_oldest_pending(double seconds) {
  outbox_oldest_pending_.store(seconds, std::memory_order_relaxed);
}

void metrics::set_queue_pending(std::int64_t pending) { queue_pending_.store(pending, std::memory_order_relaxed); }

void metrics::set_prunable(retained_kind kind, std::int64_t rows) {
  prunable_[static_cast<std::size_t>(kind)].store(rows, std::memory_order_relaxed);
}

void metrics::add_pruned(retained_kind kind, std::uint64_t rows) {
  pruned_[static_cast<std::size_t>(kind)].fetch_add(rows, std::memory_order_relaxed);
}

void metrics::add_dead_letter() { dead_letters_.fetch_add(1, std::memory_order_relaxed); }

void metrics::add_notification(bool delivered) {
  (delivered ? notifications_delivered_ : notifications_failed_).fetch_add(1, std::memory_order_relaxed);
}

const char* to_string(http_overload reason) {
  return reason == http_overload::queue_full ? "queue_full" : "deadline";
}

void metrics::add_http_overload(http_overload reason) {
  http_overloads_[static_cast<std::size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
}

void metrics::set_http_waiting(std::int64_t waiting) { http_waiting_.store(waiting, std::memory_order_relaxed); }

std::uint64_t metrics::http_overloads(http_overload reason) const {
  return http_overloads_[static_cast<std::size_t>(reason)].load();
}

std::uint64_t metrics::claims(claim_status status) const { return claims_[index_of(status)].load(); }

std::uint64_t metrics::notifications(bool delivered) const {
  return (delivered ? notifications_delivered_ : notifications_failed_).load();
}

std::string metrics::prometheus_text() const {
  std::string out;
  auto line = [&out](std::string_view text) {
    out += text;
    out += '\n';
  };

  line("# HELP voucherd_claims_total Claims by outcome.");
  line("# TYPE voucherd_claims_total counter");
  for (auto s : k_all_statuses)
    line(fmt::format("voucherd_claims_total{{outcome=\"{}\"}} {}", to_string(s), claims(s)));

  claim_duration_.render(out, "voucherd_claim_duration_seconds", "Claim latency, from taking the message to commit.");

  line("# HELP voucherd_queue_lag_seconds Age of the oldest message still queued.");
  line("# TYPE voucherd_queue_lag_seconds gauge");
  line(fmt::format("voucherd_queue_lag_seconds {}", number(queue_lag_.load(std::memory_order_relaxed))));

  line("# HELP voucherd_outbox_pending Notifications waiting for delivery.");
  line("# TYPE voucherd_outbox_pending gauge");
  line(fmt::format("voucherd_outbox_pending {}", outbox_pending_.load(std::memory_order_relaxed)));

  line("# HELP voucherd_outbox_oldest_pending_seconds Age of the oldest notification waiting for delivery.");
  line("# TYPE voucherd_outbox_oldest_pending_seconds gauge");
  line(fmt::format("voucherd_outbox_oldest_pending_seconds {}",
                   number(outbox_oldest_pending_.load(std::memory_order_relaxed))));

  line("# HELP voucherd_queue_pending Messages waiting in the Postgres queue.");
  line("# TYPE voucherd_queue_pending gauge");
  line(fmt::format("voucherd_queue_pending {}", queue_pending_.load(std::memory_order_relaxed)));

  line("# HELP voucherd_prunable_rows Rows older than their retention, which voucherd prune would delete.");
  line("# TYPE voucherd_prunable_rows gauge");
  for (auto k : k_retained_kinds)
    line(fmt::format("voucherd_prunable_rows{{kind=\"{}\"}} {}", to_string(k),
                     prunable_[static_cast<std::size_t>(k)].load(std::memory_order_relaxed)));

  line("# HELP voucherd_pruned_rows_total Rows deleted by the worker's --prune-every.");
  line("# TYPE voucherd_pruned_rows_total counter");
  for (auto k : k_retained_kinds)
    line(fmt::format("voucherd_pruned_rows_total{{kind=\"{}\"}} {}", to_string(k),
                     pruned_[static_cast<std::size_t>(k)].load(std::memory_order_relaxed)));

  line("# HELP voucherd_dead_letters_total Messages sent to the dead-letter queue.");
  line("# TYPE voucherd_dead_letters_total counter");
  line(fmt::format("voucherd_dead_letters_total {}", dead_letters()));

  line("# HELP voucherd_notification_attempts_total Notification delivery attempts by result.");
  line("# TYPE voucherd_notification_attempts_total counter");
  line(fmt::format("voucherd_notification_attempts_total{{result=\"delivered\"}} {}", notifications(true)));
  line(fmt::format("voucherd_notification_attempts_total{{result=\"failed\"}} {}", notifications(false)));

  line("# HELP voucherd_http_overload_total POST /v1/claims answered 503 unclaimed: queue full, or deadline passed.");
  line("# TYPE voucherd_http_overload_total counter");
  for (auto r : {http_overload::queue_full, http_overload::deadline})
    line(fmt::format("voucherd_http_overload_total{{reason=\"{}\"}} {}", to_string(r), http_overloads(r)));
  line("# HELP voucherd_http_waiting POST /v1/claims requests waiting to be claimed.");
  line("# TYPE voucherd_http_waiting gauge");
  line(fmt::format("voucherd_http_waiting {}", http_waiting_.load(std::memory_order_relaxed)));
  http_wait_.render(out, "voucherd_http_wait_seconds",
                    "Time a POST /v1/claims request waited, from its arrival to a claimer taking it.");
  return out;
}

}  // namespace voucherd
