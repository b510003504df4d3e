#pragma once
// redlock-global: one Redlock per campaign (campaign:<name>) around the read
// and the write. Correct as long as every holder finishes within its lock's
// validity, and serial: one claim at a time across all workers. Unsafe when a
// holder pauses past the TTL (GC, SIGSTOP): another worker takes the expired
// lock, reads the same free voucher and claims it, and the paused holder,
// resuming, overwrites it, since nothing fences a write made after expiry.
//
// Waiting for the lock is part of the design here: Redlock retries with a
// random delay for up to about k_global_lock_wait before the claim throws
// transient.
#include <random>

#include "bench/claim_strategy.hpp"
#include "bench/redlock.hpp"

namespace voucherd {

inline constexpr std::chrono::seconds k_global_lock_wait{60};
inline constexpr std::chrono::milliseconds k_global_lock_retry_delay{4};

class redlock_global_strategy final : public claim_strategy {
 public:
  redlock_global_strategy(db_session& db, const strategy_options& options);
  claim_outcome claim(const claim_request& request) override;
  std::string_view name() const override { return "redlock-global"; }

 private:
  db_session& db_;
  strategy_options options_;
  redlock lock_;
  std::mt19937_64 rng_;
};

}  // namespace voucherd
