#pragma once
// Capped exponential backoff with full jitter, for reconnecting to Postgres
// or Redis: attempt k waits a uniformly random time in [base, min(cap,
// base * 2^k)], so a fleet of workers that lost the database together does
// not reconnect in lockstep.
#include <algorithm>
#include <chrono>
#include <random>

namespace voucherd {

class backoff {
 public:
  static constexpr std::chrono::milliseconds k_default_base{50};
  static constexpr std::chrono::milliseconds k_default_cap{2000};

  explicit backoff(std::uint64_t seed, std::chrono::milliseconds base = k_default_base,
                   std::chrono::milliseconds cap = k_default_cap)
      : rng_{seed}, base_{base}, cap_{cap} {}

  std::chrono::milliseconds next() {
    const auto ceiling = std::min<long long>(cap_.count(), base_.count() << std::min(attempt_, 20));
    ++attempt_;
    std::uniform_int_distribution<long long> pick{base_.count(), std::max<long long>(base_.count(), ceiling)};
    return std::chrono::milliseconds{pick(rng_)};
  }
  void reset() { attempt_ = 0; }
  int attempts() const { return attempt_; }

 private:
  std::mt19937_64 rng_;
  std::chrono::milliseconds base_;
  std::chrono::milliseconds cap_;
  int attempt_ = 0;
};

}  // namespace voucherd
