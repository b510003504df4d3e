#pragma once
// Retention: what `voucherd prune` (and the worker's --prune-every) deletes,
// and when. Four kinds of rows grow with every message and are never needed
// again after a while:
//   sent_notifications  notification_outbox rows with status 'sent'
//                       (sent_at older than keep_sent; 'pending' and
//                       'failed' rows are never pruned)
//   done_messages       message_queue rows done longer ago than keep_done
//   outcomes            message_outcome rows older than keep_outcomes
//   dead_letters        dead_letter rows older than keep_dead_letters
//
// How (sql/prune_*.sql): batches of at most batch_size rows, oldest first,
// each one DELETE statement in a transaction of its own that locks only the
// rows it deletes, taken FOR UPDATE SKIP LOCKED. So a prune never waits for
// a claim or a dispatcher and never makes one wait: a claim locks free
// vouchers, its campaign, pending queue rows and the outcome it inserts,
// none of which a prune touches (a row someone holds is skipped and left for
// the next sweep). Each batch continues from where the one before ended,
// through an index on the age column (migration 0007): no batch scans a
// table or the entries earlier batches left behind.
//
// I4 and outcomes. An outcome records that a message was answered; a
// redelivery of the same message id then records nothing new
// (claim_one/claim_batch insert it ON CONFLICT DO NOTHING, and the claim
// itself is idempotent per user and campaign). The rule: an outcome is
// pruned only when it is older than keep_outcomes, and keep_outcomes must be
// longer than any source may still deliver that message again:
//   - pg queue: never: a done message is never taken again (and a message
//     still pending has no outcome yet: the outcome commits with done_at);
//   - Redis: while the entry sits unacknowledged in its group (a worker died
//     between commit and XACK): --claim-idle-ms until another worker takes
//     it over, at most --max-deliveries times;
//   - HTTP and `claim --message-id`: while the client retries.
// validate() refuses keep_outcomes below k_min_keep_outcomes (1 hour); the
// default, 30 days, also outlasts a worker fleet that was down for weeks.
// A redelivery that comes after its outcome was pruned is answered as a new
// message: `already_claimed` with the same code for a user who claimed
// (I1, I2 hold regardless), recorded as a new outcome.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "claim/metrics.hpp"
#include "db/connection_settings.hpp"

namespace voucherd {

struct retention_config {
  using days = std::chrono::duration<std::int64_t, std::ratio<86400>>;
  static constexpr std::chrono::seconds k_default_keep_sent = days{7};
  static constexpr std::chrono::seconds k_default_keep_done = days{7};
  static constexpr std::chrono::seconds k_default_keep_outcomes = days{30};
  static constexpr std::chrono::seconds k_default_keep_dead_letters = days{30};
  static constexpr std::chrono::seconds k_min_keep_outcomes{3600};
  // A century: far beyond any retention, and now() minus it stays a timestamp.
  static constexpr std::chrono::seconds k_max_keep = days{36500};
  static constexpr std::size_t k_default_batch = 1000;
  static constexpr std::size_t k_max_batch = 10'000;

  std::chrono::seconds keep_sent = k_default_keep_sent;
  std::chrono::seconds keep_done = k_default_keep_done;
  std::chrono::seconds keep_outcomes = k_default_keep_outcomes;
  std::chrono::seconds keep_dead_letters = k_default_keep_dead_letters;
  std::size_t batch = k_default_batch;  // rows per DELETE, 1..k_max_batch

  std::chrono::seconds keep(retained_kind kind) const;
  // Throws voucherd_error(usage) naming the option.
  void validate() const;
};

// "90s", "30m", "12h", "7d" (a whole number and a unit), or "0". Throws
// voucherd_error(usage) naming `option`.
std::chrono::seconds parse_age(const std::string& text, const std::string& option);
// The shortest text parse_age reads back to the same value ("7d", "90s").
std::string format_age(std::chrono::seconds age);

// The counts `stats` and /metrics show (sql/retention_backlog.sql).
struct backlog {
  std::int64_t outbox_pending = 0;
  double outbox_oldest_pending_s = 0;
  std::int64_t queue_pending = 0;
  std::int64_t prunable[std::size(k_retained_kinds)] = {};
};

class retention_pruner {
 public:
  // One batch's progress through one kind, for a progress line.
  struct progress {
    retained_kind kind;
    std::uint64_t deleted = 0;  // so far in this sweep, of this kind
    std::uint64_t batches = 0;
    bool done = false;          // this kind is swept
  };

  // conninfo: a libpq connection string; opened on first use, reopened
  // after a failure.
  retention_pruner(std::string conninfo, retention_config config, transaction_pooling pooling = {});
  ~retention_pruner();

  // Sweeps each kind in turn until a batch finds nothing more to delete (or
  // `stop` is set). `report` is called after every batch. Returns the rows
  // deleted per kind. Throws on a database failure (what was deleted stays
  // deleted: every batch commits on its own).
  std::array<std::uint64_t, std::size(k_retained_kinds)> sweep(const std::function<void(const progress&)>& report,
                                                                const std::atomic<bool>* stop = nullptr);
  backlog read_backlog();

 private:
  struct connection;
  connection& db();

  std::string conninfo_;
  retention_config config_;
  transaction_pooling pooling_;
  std::unique_ptr<connection> db_;
};

}  // namespace voucherd
