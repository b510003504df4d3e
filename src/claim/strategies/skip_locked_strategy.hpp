#pragma once
// skip-locked: voucherd's own claim (claim_engine, sql/claim_one.sql) behind
// the strategy interface. The default, and the only correct one.
#include "claim/claim_engine.hpp"
#include "claim/claim_strategy.hpp"

namespace voucherd {

class skip_locked_strategy final : public claim_strategy {
 public:
  explicit skip_locked_strategy(db_session& db) : engine_{db} {}
  claim_outcome claim(const claim_request& request) override { return engine_.claim(request); }
  std::string_view name() const override { return "skip-locked"; }

 private:
  claim_engine engine_;
};

}  // namespace voucherd
