#pragma once
// The one claim path. Every caller claims through claim_core: `voucherd
// claim` and `claim-batch` (through blocking_claimer, below), the worker's
// claimers on every source, and HTTP. The callers differ in how they wait
// (a coroutine on the worker's io_context, or a private io_context run to
// completion), not in what they decide.
//
// A claim is the atomic statement of SPEC section 1: sql/claim_one.sql for one
// user, sql/claim_batch.sql for up to k_max_statement_batch users of one
// campaign, each writing the outbox row in the same statement. What the core
// adds around them:
//  - bad requests are answered rejected before the database is touched (I5);
//  - sold_out is true (I7): SKIP LOCKED skips free vouchers whose holders may
//    still roll back, so a sold_out from the first statement is only a
//    suspicion. The core then waits for those holders (sql/claim_wait_free.sql,
//    bounded by lock_timeout: running out is a transient error, never
//    sold_out) and claims again in the same round trip; only that second
//    answer is final and recorded. The common case pays nothing: the extra
//    statement runs only when SKIP LOCKED found nothing;
//  - a message id is used once per source (claim_request::source): its first
//    message's outcome is recorded; a repeat for the same user and campaign
//    is a redelivery; a repeat for another user or campaign claims nothing,
//    is answered rejected with the reason, and is dead-lettered by the
//    statement itself (claim_outcome::dead_lettered);
//  - the free mark (campaign.free_from) moves up after the transaction
//    committed, when free_mark_policy says so.
// What it leaves to the caller: the transaction (claim() runs inside one the
// caller opened, alongside the source's take and record; or, for a caller
// whose transaction holds nothing else, claim() commits it) and the retry rule
// of common/failure.hpp: a racing duplicate delivery fails the transaction
// with a unique violation on voucher_item_owner_key only after the first
// delivery committed, so running it again answers already_claimed with the
// same code.
#include <chrono>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include "claim/claim_outcome.hpp"
#include "claim/claim_request.hpp"
#include "db/pg_connection.hpp"

namespace voucherd {

// How far a claim may land past its campaign's free_from mark before the
// claimer moves the mark up (sql/advance_free_mark.sql). Bounds the dead index
// entries a claim walks over to about one B-tree page.
inline constexpr std::int64_t k_free_mark_gap = 256;
// How often a blocking caller runs a transaction that keeps failing with a
// retry-at-once error before it gives up with a transient error.
inline constexpr int k_max_claim_attempts = 5;

// What one campaign's claims in a transaction tell the free-mark policy.
struct campaign_progress {
  std::int64_t campaign_id = 0;
  std::int64_t free_from = 0;
  std::int64_t highest_claimed = 0;
  bool saw_sold_out = false;
  // How far past the mark claims may land before it moves: k_free_mark_gap
  // for claims that start from the mark; more for the pg queue's one
  // statement, which reads no mark and moves it only for the claims that do.
  std::int64_t gap = k_free_mark_gap;
};
using claim_progress = std::map<std::string, campaign_progress>;  // by campaign name

// When a claimer should move its campaign's free_from mark up: after a claim
// landed more than k_free_mark_gap past it, once per mark value seen (or
// again a second later, should that try have found the campaign locked), or
// (at most once a second per campaign) after a sold-out claim walked to the
// end of the pool. Each move is a transaction of its own that locks the
// campaign row and commits; without the once-per-value rule every claimer
// that crossed the gap tried (16 claimers: 649 tries for 8,176 claims, most
// finding the row locked by the one that moved it). Safe to share between
// threads.
class free_mark_policy {
 public:
  bool should_advance(const campaign_progress& progress);

 private:
  struct gap_try {
    std::int64_t free_from = 0;
    std::chrono::steady_clock::time_point at{};
  };
  std::mutex mutex_;  // guards both maps
  std::unordered_map<std::int64_t, std::chrono::steady_clock::time_point> last_sold_out_advance_;
  std::unordered_map<std::int64_t, gap_try> last_gap_try_;
};

// The pure part of a claim: how one result row of claim_one/claim_batch (its
// status text, voucher_id, code, and reason for 'reused') becomes an outcome.
claim_outcome outcome_from_row(const claim_request& request, std::string_view status,
                               std::optional<std::int64_t> voucher_id, std::string_view code,
                               std::string_view reason = {});
// The outcome when the statement returned no row: the campaign does not exist.
claim_outcome unknown_campaign_outcome(const claim_request& request);

// Thrown by claim_core::claim(commit = true) when its first transaction
// committed and the one settling a sold_out suspicion failed (rolled back,
// or its connection lost): `outcomes` holds an answer for every request, and
// those at `unsettled` are not answers (their claims did not run).
// `failure` is what the second transaction threw (a pg_error, mostly).
struct partly_committed : std::exception {
  partly_committed(std::vector<claim_outcome> o, std::vector<std::size_t> u, std::exception_ptr f)
      : outcomes{std::move(o)}, unsettled{std::move(u)}, failure{std::move(f)} {}
  const char* what() const noexcept override { return "a claim transaction partly committed"; }
  std::vector<claim_outcome> outcomes;
  std::vector<std::size_t> unsettled;
  std::exception_ptr failure;
};

class claim_core {
 public:
  static constexpr std::size_t k_max_statement_batch = 1000;

  // Claims every request, inside the transaction the caller opened on conn.
  // Requests may name several campaigns. batched: claim_batch per campaign
  // (up to k_max_statement_batch users a statement) rather than claim_one per
  // request. Returns one outcome per request, in order; notes what the free
  // mark needs in progress. Database failures throw pg_error (with commit,
  // after a commit, partly_committed).
  // commit: the transaction holds nothing but these claims (a push source
  // that records nothing); claim() commits it, sending COMMIT in the same
  // round trip as its last statement (one round trip a batch, not two), and
  // returns with no transaction open. A sold_out suspicion found by that
  // statement is then settled in a transaction of its own, which claim()
  // commits too; should that one fail, what the first committed stands and
  // partly_committed is thrown.
  asio::awaitable<std::vector<claim_outcome>> claim(pg_connection& conn, std::span<const claim_request> requests,
                                                    bool batched, claim_progress& progress, bool commit = false);

  // After the claim transaction committed: moves the marks that the policy
  // says should move, each in its own short transaction that skips a campaign
  // another transaction (an import, another claimer) holds. A failure here
  // loses nothing; a lost connection is thrown.
  asio::awaitable<void> advance_marks(pg_connection& conn, const claim_progress& progress);

 private:
  // One pass over the members of one campaign; `final` as in claim_one's $4.
  // Members answered sold_out are added to `sold_out`. commit: COMMIT goes
  // out behind the pass's last statement.
  asio::awaitable<void> claim_pass(pg_connection& conn, std::span<const claim_request> requests,
                                   const std::vector<std::size_t>& members, bool batched, bool final, bool commit,
                                   std::vector<claim_outcome>& out, claim_progress& progress,
                                   std::vector<std::size_t>& sold_out);

  free_mark_policy marks_;
};

// The claim path for callers that block (`voucherd claim`, `claim-batch`,
// the race lab's skip-locked pods): its own connection and io_context, one
// transaction per call, retried at once up to k_max_claim_attempts times on
// the retry-at-once errors (then a claim throws voucherd_error(transient),
// and a batch falls back to one transaction per request); any other failure
// is thrown as it is (a pg_error, whose kind gives the exit status).
class blocking_claimer {
 public:
  blocking_claimer(std::string conninfo, pg_deadlines deadlines, transaction_pooling pooling = {});
  ~blocking_claimer();

  claim_outcome claim(const claim_request& request);
  // One transaction for all of them (claim_batch statements of up to
  // claim_core::k_max_statement_batch users).
  std::vector<claim_outcome> claim_batch(std::span<const claim_request> requests);

 private:
  // One transaction, run again at once on a retry-at-once error up to
  // k_max_claim_attempts times; nullopt when every attempt failed so.
  std::optional<std::vector<claim_outcome>> transaction(std::span<const claim_request> requests, bool batched,
                                                        std::string& last_error);

  asio::io_context io_;
  pg_connection conn_;
  claim_core core_;
};

}  // namespace voucherd
