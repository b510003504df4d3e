#pragma once
// The Postgres queue source: messages are rows of message_queue, in the same
// database as the pool.
//
// take() locks up to B pending rows with FOR UPDATE SKIP LOCKED inside the
// claimer's transaction; record() writes each outcome (status, reason,
// voucher_id) onto its row and dead-letters rejected ones, still inside it.
// Take, claim and mark-done commit together or not at all: a worker killed
// at any point leaves its rows pending and unlocked, another worker takes
// them, and the effect is exactly once. Nothing needs acknowledging after the
// commit. Order: oldest first, but concurrent claimers finish out of order.
//
// Idle claimers sleep on their connection's socket, subscribed to the
// voucherd_queue channel that `voucherd enqueue` notifies after each commit
// (LISTEN/NOTIFY), with k_idle_wait as a safety net, not a busy poll. Behind
// a transaction pooler they listen on a direct connection of their own
// (--listen-url), or, without one, look again every k_idle_wait.
#include <pqxx/connection>

#include "db/sql_statement.hpp"
#include "source/message_source.hpp"

namespace voucherd {

class pg_queue_source final : public message_source {
 public:
  const char* name() const override { return "pg"; }
  void start(asio::io_context&) override {}
  asio::awaitable<void> on_connect(pg_connection& conn) override;
  asio::awaitable<std::vector<delivery>> take(pg_connection& conn, std::size_t max) override;
  asio::awaitable<void> wait_for_work(pg_connection& conn) override;
  asio::awaitable<void> record(pg_connection& conn, std::vector<delivery>& batch,
                               const std::vector<claim_outcome>& outcomes) override;
  void committed(std::vector<delivery>&, const std::vector<claim_outcome>&) override {}
  void abandoned(std::vector<delivery>, bool) override {}
  asio::awaitable<int> note_attempt(pg_connection& conn, delivery& d, int tries,
                                    std::optional<std::string> error) override;
  asio::awaitable<std::vector<delivery>> retake(pg_connection& conn, std::vector<delivery> batch) override;
  // sql/queue_claim.sql (queue_claim_one.sql at one message): which messages
  // are plain, and what it does with the others.
  asio::awaitable<std::optional<one_statement_claims>> take_and_claim(pg_connection& conn, std::size_t max,
                                                                      const std::string& default_campaign) override;
  // A queue row is its own record: record() writes the outcome onto it,
  // keyed by the queue id, exactly once (take, claim and mark-done commit
  // together), so the claim records nothing in message_outcome, and an id
  // the message itself carries plays no part.
  void key_outcome(const delivery&, claim_request& request) const override { request.message_id.clear(); }
};

// Puts messages on the queue in one transaction and wakes the listening
// workers when it commits (queue_enqueue, queue_notify). Blocking: for the
// command line. Returns the queue ids, in order.
std::vector<std::int64_t> enqueue_messages(pqxx::connection& conn, const std::vector<std::string>& bodies);

// The one-statement path's statement for up to `max` messages:
// sql/queue_claim_one.sql for one, sql/queue_claim.sql with `max` written in
// for more. Both answer a message alike.
const sql_statement& queue_claim_statement(std::size_t max);

// A Postgres array literal ({...}) of the given elements; nullopt is NULL.
std::string pg_array_literal(const std::vector<std::optional<std::string>>& elements);

}  // namespace voucherd
