#pragma once
// The claim: one atomic statement per user (sql/claim_one.sql) or per batch of
// users (sql/claim_batch.sql), run on one connection. This is the whole
// correctness story of voucherd: no lock outside Postgres, no read-then-write.
//
// Contract:
//  - bad input is checked before the database is touched and comes back as a
//    rejected outcome; so do unknown and inactive campaigns;
//  - a concurrent duplicate delivery for the same user (unique violation on
//    voucher_item_owner_key), a serialization failure or a deadlock is retried
//    up to k_max_claim_attempts times; then voucher_error(transient) is thrown;
//  - a lost connection throws voucherd_error(transient): whether the claim
//    committed is then unknown, and re-running it is safe (already_claimed).
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "claim/claim_outcome.hpp"
#include "claim/claim_request.hpp"
#include "db/session.hpp"

namespace voucherd {

inline constexpr int k_max_claim_attempts = 5;
// A batch that keeps colliding with concurrent claims of its users falls back
// to one claim per user after this many attempts.
inline constexpr int k_max_batch_attempts = 3;
// How far a claim may land past its campaign's free_from mark before the
// claimer moves the mark up (sql/advance_free_mark.sql). Bounds the dead index
// entries a claim walks over to about one B-tree page.
inline constexpr std::int64_t k_free_mark_gap = 256;

// The pure part of a claim, shared by this blocking engine and the worker's
// asynchronous claimers: how one result row of claim_one/claim_batch (its
// status text, voucher_id and code) becomes an outcome.
claim_outcome outcome_from_row(const claim_request& request, std::string_view status,
                               std::optional<std::int64_t> voucher_id, std::string_view code);
// The outcome when the statement returned no row: the campaign does not exist.
claim_outcome unknown_campaign_outcome(const claim_request& request);

// When a claimer should move its campaign's free_from mark up: after a claim
// landed more than k_free_mark_gap past it, or (at most once a second per
// campaign) after a sold-out claim walked to the end of the pool. Safe to
// share between threads.
class free_mark_policy {
 public:
  bool should_advance(std::int64_t campaign_id, std::int64_t free_from, std::int64_t highest_claimed,
                      bool saw_sold_out);

 private:
  std::mutex mutex_;  // guards last_sold_out_advance_
  std::unordered_map<std::int64_t, std::chrono::steady_clock::time_point> last_sold_out_advance_;
};

class claim_engine {
 public:
  explicit claim_engine(db_session& db) : db_{db} {}

  claim_outcome claim(const claim_request& request);

  // All requests of one batch must name the same campaign. Returns one
  // outcome per request, in order. At most k_max_batch requests.
  std::vector<claim_outcome> claim_batch(std::span<const claim_request> requests);

  static constexpr std::size_t k_max_batch = 1000;

 private:
  void after_claim(std::int64_t campaign_id, std::int64_t free_from, std::int64_t highest_claimed,
                   bool saw_sold_out);

  db_session& db_;
  free_mark_policy free_mark_;
};

// Moves a campaign's free_from mark up to its first free voucher, unless
// another transaction holds the campaign row (then that one does the job).
// Returns true when it moved the mark.
bool advance_free_mark(pqxx::connection& conn, std::int64_t campaign_id);

}  // namespace voucherd
