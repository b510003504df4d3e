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
#include <span>
#include <unordered_map>
#include <vector>

#include "claim/claim_outcome.hpp"
#include "claim/claim_request.hpp"
#include "db/session.hpp"

namespace voucherd {

inline constexpr int k_max_claim_attempts = 5;
// How far a claim may land past its campaign's free_from mark before the
// claimer moves the mark up (sql/advance_free_mark.sql). Bounds the dead index
// entries a claim walks over to about one B-tree page.
inline constexpr std::int64_t k_free_mark_gap = 256;

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
  std::unordered_map<std::int64_t, std::chrono::steady_clock::time_point> last_sold_out_advance_;
};

// Moves a campaign's free_from mark up to its first free voucher, unless
// another transaction holds the campaign row (then that one does the job).
// Returns true when it moved the mark.
bool advance_free_mark(pqxx::connection& conn, std::int64_t campaign_id);

}  // namespace voucherd
