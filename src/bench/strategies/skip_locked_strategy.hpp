#pragma once
// skip-locked: voucherd's own claim (claim_core, sql/claim_one.sql) behind
// the strategy interface. The default, and the only correct one.
//
// It has no gap between a read and a write to put the race lab's simulated
// work in; it sleeps the same work ± jitter before the statement instead, so
// that a comparison charges every strategy the same per-message latency.
#include <random>

#include "claim/claim_core.hpp"
#include "bench/claim_strategy.hpp"

namespace voucherd {

class skip_locked_strategy final : public claim_strategy {
 public:
  skip_locked_strategy(db_session& db, const strategy_options& options);
  claim_outcome claim(const claim_request& request) override;
  std::string_view name() const override { return "skip-locked"; }

 private:
  blocking_claimer claimer_;
  strategy_options options_;
  std::mt19937_64 rng_;
};

}  // namespace voucherd
