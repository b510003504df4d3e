#include "bench/strategies/redlock_global_strategy.hpp"

#include <fmt/format.h>

#include "bench/strategies/story_steps.hpp"
#include "common/failure.hpp"

namespace voucherd {

namespace {

redlock_options global_lock_options(const strategy_options& o) {
  redlock_options lock;
  lock.ttl = o.lock_ttl;
  lock.retry_delay = k_global_lock_retry_delay;
  // The mean retry delay is half the maximum.
  lock.retry_count = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(k_global_lock_wait).count() * 2 /
      k_global_lock_retry_delay.count());
  return lock;
}

}  // namespace

redlock_global_strategy::redlock_global_strategy(db_session& db, const strategy_options& options)
    : db_{db}, options_{options}, lock_{options.redis_nodes, global_lock_options(options)}, rng_{options.seed} {}

claim_outcome redlock_global_strategy::claim(const claim_request& r) {
  if (auto problem = request_problem(r)) return rejected_outcome(r.campaign, r.user_id, *problem, r.message_id);
  auto lease = lock_.acquire(fmt::format("campaign:{}", r.campaign));
  if (!lease)
    throw voucherd_error{failure_kind::transient,
                         fmt::format("campaign lock not acquired within about {} s", k_global_lock_wait.count())};
  try {
    const auto read = story::read_first_free(db_, r.campaign);
    if (!read.voucher) {
      lock_.release(*lease);
      return story::not_claimed(r, read);
    }
    story::simulate_work(options_, rng_);
    if (options_.before_write) options_.before_write();
    // The story's code does not look at the lease again before writing: a
    // holder that was paused past the validity writes anyway.
    story::write_owner(db_, *read.voucher, r.user_id);
    lock_.release(*lease);
    return story::claimed(r, *read.voucher);
  } catch (...) {
    lock_.release(*lease);
    throw;
  }
}

}  // namespace voucherd
