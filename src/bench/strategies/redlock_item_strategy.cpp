#include "bench/strategies/redlock_item_strategy.hpp"

#include <thread>

#include <fmt/format.h>

#include "bench/strategies/story_steps.hpp"
#include "common/failure.hpp"

namespace voucherd {

redlock_item_strategy::redlock_item_strategy(db_session& db, const strategy_options& options,
                                             bool delay_release)
    : db_{db},
      options_{options},
      delay_release_{delay_release},
      lock_{options.redis_nodes, redlock_options{.ttl = options.lock_ttl}},
      rng_{options.seed} {}

claim_outcome redlock_item_strategy::claim(const claim_request& r) {
  if (auto problem = request_problem(r)) return rejected_outcome(r.campaign, r.user_id, *problem, r.message_id);
  for (int round = 0; round < k_max_lock_rounds; ++round) {
    const auto read = story::read_first_free(db_, r.campaign);
    if (!read.voucher) return story::not_claimed(r, read);
    story::simulate_work(options_, rng_);
    // The story's lock: on the id it has already read.
    auto lease = lock_.acquire(fmt::format("voucher_item:{}", read.voucher->voucher_id));
    if (!lease) continue;
    try {
      if (options_.before_write) options_.before_write();
      story::write_owner(db_, *read.voucher, r.user_id);
    } catch (...) {
      lock_.release(*lease);
      throw;
    }
    if (delay_release_) std::this_thread::sleep_for(options_.release_delay);
    lock_.release(*lease);
    return story::claimed(r, *read.voucher);
  }
  throw voucherd_error{failure_kind::transient,
                       fmt::format("no voucher lock acquired in {} rounds", k_max_lock_rounds)};
}

}  // namespace voucherd
