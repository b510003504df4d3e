#pragma once
// redlock and redlock-delay: the story's "fix". Read the first free voucher,
// (work), then take a Redlock on voucher_item:<id>, update that id, notify,
// release. The lock is taken after the read, so it protects nothing: a worker
// that read the same id before the first one wrote waits for the lock, gets
// it once it is released, and overwrites. redlock-delay keeps the lock for
// release_delay after the commit, which only narrows that window.
//
// When the lock cannot be had after Redlock's retries, the claim starts over
// from the read (the story's worker would nack the message and have it
// redelivered), at most k_max_lock_rounds times; then it throws transient.
#include <random>

#include "bench/claim_strategy.hpp"
#include "bench/redlock.hpp"

namespace voucherd {

inline constexpr int k_max_lock_rounds = 50;

class redlock_item_strategy final : public claim_strategy {
 public:
  redlock_item_strategy(db_session& db, const strategy_options& options, bool delay_release);
  claim_outcome claim(const claim_request& request) override;
  std::string_view name() const override { return delay_release_ ? "redlock-delay" : "redlock"; }

 private:
  db_session& db_;
  strategy_options options_;
  bool delay_release_;
  redlock lock_;
  std::mt19937_64 rng_;
};

}  // namespace voucherd
