#pragma once
// The one interface every queue source (stdin, pg, redis) implements, and
// that one conformance suite (tests/source_conformance_test.cpp) checks.
//
// A claimer drives a source through one transaction per batch:
//
//   worker_begin
//   take(conn, B)          -> up to B deliveries (never blocks; empty = none now)
//   ... claim them (claim_one / claim_batch) ...
//   record(conn, ...)      -> the source's own bookkeeping, same transaction
//   worker_commit
//   committed(...)         -> only now may the source acknowledge
//
// On any failure before the commit returned, the transaction is rolled back
// (or died with its connection) and abandoned() gives the deliveries back to
// be taken again.
//
// Poison isolation: when a batch fails with an error about one of its
// messages (see refuses_message and is_timeout in common/failure.hpp), the
// claimer splits it and tries each delivery alone, in a transaction of its
// own that takes it again with retake(). A delivery that fails alone becomes
// a suspect (note_attempt counts the try); a suspect is only ever tried
// alone, each try counted by note_attempt() before it runs (where the count
// survives a crash), and once its tries reach --max-deliveries it is recorded
// as rejected with the database's last error (record(), committed(), as for
// any rejected message) instead of being tried again. Because claims are idempotent per user (and per source and message id)
// a delivery that is taken twice still has one effect. The window between
// commit and acknowledgement is the one place a message can be delivered
// again after its effect happened; the claim statement answers such a
// redelivery with already_claimed and the same code.
//
// All methods run on the worker's io_context thread.
#include <chrono>
#include <cstddef>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include "claim/claim_core.hpp"
#include "claim/claim_outcome.hpp"
#include "claim/claim_request.hpp"
#include "source/message.hpp"
#include "db/pg_connection.hpp"

namespace voucherd {

// How long an idle claimer sleeps before it looks again (also bounds how long
// SIGTERM waits for an idle claimer).
inline constexpr std::chrono::milliseconds k_idle_wait{250};

// What one take-and-claim statement did (message_source::take_and_claim):
// it committed the outcomes of `finished` and left `left` pending.
struct one_statement_claims {
  std::vector<claim_status> finished;  // claimed or already_claimed, one per message
  double max_lag_seconds = 0;          // of every message taken
  std::vector<delivery> left;          // ids only: retake() them for the general path
  claim_progress progress;             // for the free marks (claim_core::advance_marks)
};

class message_source {
 public:
  virtual ~message_source() = default;
  virtual const char* name() const = 0;

  virtual void start(asio::io_context& io) = 0;
  // Every (re)connected claimer connection passes through here first.
  virtual asio::awaitable<void> on_connect(pg_connection& conn);
  virtual asio::awaitable<std::vector<delivery>> take(pg_connection& conn, std::size_t max) = 0;
  // Waits at most about k_idle_wait for take() to have something.
  virtual asio::awaitable<void> wait_for_work(pg_connection& conn) = 0;
  virtual asio::awaitable<void> record(pg_connection& conn, std::vector<delivery>& batch,
                                       const std::vector<claim_outcome>& outcomes) = 0;
  virtual void committed(std::vector<delivery>& batch, const std::vector<claim_outcome>& outcomes) = 0;
  // unavailable: the database cannot be used now (lost, timed out), rather
  // than a retry-at-once failure; a push source answers its client then.
  virtual void abandoned(std::vector<delivery> batch, bool unavailable) = 0;

  // Adds `tries` (0 or 1) to a delivery's tries alone and keeps `error` as
  // its last error (when given); returns the tries so far (and sets
  // d.attempts, d.last_error), or 0 when the delivery is no longer this
  // claimer's (done, or held by another claimer). Runs outside any
  // transaction. The in-memory sources keep both on the delivery.
  virtual asio::awaitable<int> note_attempt(pg_connection&, delivery& d, int tries, std::optional<std::string> error) {
    d.attempts += tries;
    if (error) d.last_error = std::move(*error);
    co_return d.attempts;
  }
  // Takes deliveries of a split batch again, inside a new transaction; the
  // ones returned are this claimer's. The in-memory sources hold them still.
  virtual asio::awaitable<std::vector<delivery>> retake(pg_connection&, std::vector<delivery> batch) {
    co_return batch;
  }

  // A source whose messages live in the claim's database may take, claim
  // and record its plain messages in one statement that is its own
  // transaction: one round trip and one commit instead of three and one. It
  // leaves the rest pending, for the claimer to retake() and run through
  // the general path above. On error the statement changed nothing.
  // nullopt: the source has no such path (the default).
  virtual asio::awaitable<std::optional<one_statement_claims>> take_and_claim(pg_connection&, std::size_t /*max*/,
                                                                              const std::string& /*default_campaign*/) {
    co_return std::nullopt;
  }
  // Messages a claimer takes into one transaction: the worker's --batch,
  // unless the source has its own (the HTTP source's group commit).
  virtual std::size_t messages_per_transaction(std::size_t worker_batch) const { return worker_batch; }

  // Whether record() writes in the claim's transaction. A source whose
  // record() writes nothing (the push sources: their clients are answered
  // after the commit) says false: its record() is not called, and the claim
  // commits its transaction in the round trip of its last statement.
  virtual bool records_in_database() const { return true; }

  // Sets the key a claim records the outcome under (message_outcome.source
  // and message_id, see claim_request::source). By default, the id the
  // message carries, in the source its client named ("<name()>[:<its
  // message_source>]", as parse_message set it). A queue keys by its own
  // ids instead: the redis source by stream and entry id; the pg queue
  // records the outcome on the queue row itself, keyed by its id.
  virtual void key_outcome(const delivery&, claim_request&) const {}

  // A claimer cannot reach the database (it keeps trying). A push source
  // answers what waits in memory as a transient failure rather than keep its
  // clients waiting; a queue keeps its messages.
  virtual void database_unavailable() {}

  // No message will come again and every taken one is answered (stdin at EOF).
  virtual bool finished() const { return false; }
  // SIGTERM/SIGINT: take nothing new from the queue.
  virtual void stop_intake() {}
  // After stop_intake: whether messages already read from the queue into
  // memory are all answered (a claimer stops only then, so they are claimed
  // and acknowledged rather than left pending on a stopped consumer).
  virtual bool drained() const { return true; }
  // After the last claimer stopped: flush acknowledgements, join threads.
  virtual void close() {}
};

}  // namespace voucherd
