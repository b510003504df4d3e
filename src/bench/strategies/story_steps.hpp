#pragma once
// The steps of the story's claim (SPEC section 1), shared by the lock-based
// strategies so that each of them differs only in where it locks:
//   read_first_free  - "SELECT the first voucher with user_id IS NULL", alone;
//   simulate_work    - the time a real service spends between read and write;
//   write_owner      - "UPDATE that id", no re-check, plus the notification of
//                      the code that was read, in one unguarded transaction.
#include <cstdint>
#include <optional>
#include <random>
#include <string>

#include "claim/claim_outcome.hpp"
#include "claim/claim_request.hpp"
#include "bench/claim_strategy.hpp"
#include "db/session.hpp"

namespace voucherd::story {

struct free_voucher {
  std::int64_t campaign_id = 0;
  std::int64_t voucher_id = 0;
  std::string code;
};

struct read_result {
  bool campaign_known = false;
  std::optional<free_voucher> voucher;  // nullopt: sold out
};

read_result read_first_free(db_session& db, const std::string& campaign);
void write_owner(db_session& db, const free_voucher& voucher, const std::string& user_id);

// Sleeps work ± jitter (uniform), drawn from rng.
void simulate_work(const strategy_options& options, std::mt19937_64& rng);

// The outcomes a story step ends in.
claim_outcome claimed(const claim_request& r, const free_voucher& v);
claim_outcome not_claimed(const claim_request& r, const read_result& read);

}  // namespace voucherd::story
