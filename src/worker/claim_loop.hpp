#pragma once
// The loop of one claimer, and what it does when a transaction fails. Each
// claimer owns one asynchronous Postgres connection (db/pg_connection) and
// runs one transaction per batch, the general path:
//   BEGIN; take up to --batch messages; claim them (claim_core); let the
//   source record the outcomes; COMMIT; then let the source acknowledge.
// A source whose messages are rows of the same database (the pg queue) does
// the plain ones in one statement instead (take_and_claim); the messages it
// leaves, and every message after it fails, go through the general path.
// How a transaction can end, and what follows:
//  - committed: acknowledged, then the free marks move (claim_core);
//  - retry at once (a racing duplicate of the same user committed first, a
//    deadlock): run again; a batch that keeps colliding is split, since
//    alone each message converges (already_claimed);
//  - unavailable (connection lost, server shutting down, read-only, a
//    missing table or permission: every message alike): give the messages
//    back, back off with jitter, reconnect when lost; never exit on it and
//    blame no message;
//  - refused (the database refused a message: a constraint, a trigger) or
//    timed out (a statement or lock wait ran out): split the batch, try each
//    message alone so its neighbours commit; a message that fails alone
//    (timed out only counts when other claims commit meanwhile: else the
//    database is slow) becomes a suspect, only ever tried alone again with
//    each try counted before it runs, and after --max-deliveries tries it is
//    rejected with the database's last error and dead-lettered.
// Safe to share between the claimers of every thread: claim_core's free-mark
// policy locks, the commit counter is atomic, the rest is read-only.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include "claim/claim_core.hpp"
#include "claim/metrics.hpp"
#include "common/backoff.hpp"
#include "notify/outbox_bell.hpp"
#include "source/message_source.hpp"
#include "worker/worker_config.hpp"

namespace voucherd {

class claim_loop {
 public:
  // stopping: set on SIGTERM; a claimer then finishes what its source holds.
  claim_loop(const worker_config& config, metrics& registry, const std::atomic<bool>& stopping);

  // One claimer, on ctx, draining src until the source is finished, or until
  // stopping and the source is drained (or the database is gone).
  asio::awaitable<void> run(asio::io_context& ctx, message_source& src, int index);

  // Rung after every commit that claimed a voucher (and so wrote its
  // notification): wakes the dispatchers. Set before the claimers start; null = none.
  void ring_after_claims(outbox_bell* bell) { bell_ = bell; }

 private:
  using clock_type = std::chrono::steady_clock;

  enum class ending { committed, retry_at_once, unavailable, timed_out, refused };
  struct transaction_result {
    ending how = ending::committed;
    std::string error;  // what the database said, when not committed
  };

  // Claims a taken batch, records it and commits, in the transaction whose
  // BEGIN went out with the take; rolls back on failure. Acknowledges what
  // committed and moves the free marks.
  asio::awaitable<transaction_result> finish_transaction(pg_connection& conn, message_source& src,
                                                         std::vector<delivery>& batch, clock_type::time_point started);
  // The ending a failed transaction's exception means (a std::exception:
  // a pg_error by its SQLSTATE, anything else unavailable); a lost
  // connection is closed.
  static transaction_result failed_with(std::exception_ptr failure, pg_connection& conn);
  // After a commit: acknowledges the batch to the source, counts its claims,
  // rings the dispatchers and moves the free marks.
  asio::awaitable<void> acknowledge(pg_connection& conn, message_source& src, std::vector<delivery>& batch,
                                    const std::vector<claim_outcome>& outcomes, clock_type::time_point started,
                                    const claim_progress& progress);
  // Counts what a one-statement claim committed (message_source::take_and_claim).
  void account(const one_statement_claims& one, clock_type::duration took);
  // One delivery in a transaction of its own (taken again with retake).
  asio::awaitable<transaction_result> try_alone(pg_connection& conn, message_source& src, delivery& d);
  // Tries each delivery of a failed batch alone. Returns a pause for the claimer.
  asio::awaitable<std::chrono::milliseconds> split(pg_connection& conn, message_source& src,
                                                   std::vector<delivery> batch, backoff& retry);
  // Suspects are only ever tried alone, each try counted before it runs.
  asio::awaitable<std::chrono::milliseconds> try_suspects(pg_connection& conn, message_source& src,
                                                          std::vector<delivery> suspects, backoff& retry);
  // A delivery whose try alone failed for its own sake: counts the try
  // (unless counted before it ran), then gives it back, or gives it up.
  asio::awaitable<std::chrono::milliseconds> blame(pg_connection& conn, message_source& src, delivery d,
                                                   const std::string& error, bool counted, backoff& retry);
  // Records a rejected outcome for a delivery given up, in a transaction of its own.
  asio::awaitable<void> give_up(pg_connection& conn, message_source& src, delivery d);
  // Gives deliveries from `from` on back after the database turned out unusable.
  void give_back(message_source& src, std::vector<delivery>& batch, std::size_t from);
  // Gives one delivery back (abandoned(), one element).
  void give_back(message_source& src, delivery d, bool unavailable);

  const worker_config& config_;
  metrics& registry_;
  const std::atomic<bool>& stopping_;
  claim_core core_;
  // Committed claim transactions: when other messages commit while one keeps
  // timing out, the message is what is slow.
  std::atomic<std::uint64_t> commits_{0};
  std::uint64_t seed_;
  outbox_bell* bell_ = nullptr;
};

}  // namespace voucherd
