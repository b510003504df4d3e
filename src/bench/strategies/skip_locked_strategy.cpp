#include "bench/strategies/skip_locked_strategy.hpp"

#include "bench/strategies/story_steps.hpp"

namespace voucherd {

skip_locked_strategy::skip_locked_strategy(db_session& db, const strategy_options& options)
    : claimer_{db.conninfo(), pg_deadlines{}}, options_{options}, rng_{options.seed} {}

claim_outcome skip_locked_strategy::claim(const claim_request& request) {
  story::simulate_work(options_, rng_);
  return claimer_.claim(request);
}

}  // namespace voucherd
