#include "bench/strategies/naive_strategy.hpp"

#include "bench/strategies/story_steps.hpp"

namespace voucherd {

naive_strategy::naive_strategy(db_session& db, const strategy_options& options)
    : db_{db}, options_{options}, rng_{options.seed} {}

claim_outcome naive_strategy::claim(const claim_request& r) {
  if (auto problem = request_problem(r)) return rejected_outcome(r.campaign, r.user_id, *problem, r.message_id);
  const auto read = story::read_first_free(db_, r.campaign);
  if (!read.voucher) return story::not_claimed(r, read);
  story::simulate_work(options_, rng_);
  if (options_.before_write) options_.before_write();
  story::write_owner(db_, *read.voucher, r.user_id);
  return story::claimed(r, *read.voucher);
}

}  // namespace voucherd
