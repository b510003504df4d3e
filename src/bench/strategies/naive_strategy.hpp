#pragma once
// naive: the story's claim with no lock at all. Read the first free voucher,
// (work), update that id, notify. Two workers that read before either writes
// get the same voucher; the second write silently takes it from the first
// user, who has already been told its code.
#include <random>

#include "bench/claim_strategy.hpp"

namespace voucherd {

class naive_strategy final : public claim_strategy {
 public:
  naive_strategy(db_session& db, const strategy_options& options);
  claim_outcome claim(const claim_request& request) override;
  std::string_view name() const override { return "naive"; }

 private:
  db_session& db_;
  strategy_options options_;
  std::mt19937_64 rng_;
};

}  // namespace voucherd
