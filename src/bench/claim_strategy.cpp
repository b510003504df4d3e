#include "bench/claim_strategy.hpp"

#include <fmt/format.h>

#include "bench/strategies/naive_strategy.hpp"
#include "bench/strategies/redlock_global_strategy.hpp"
#include "bench/strategies/redlock_item_strategy.hpp"
#include "bench/strategies/skip_locked_strategy.hpp"
#include "common/failure.hpp"

namespace voucherd {

const std::vector<std::string_view>& strategy_names() {
  static const std::vector<std::string_view> k_names{"skip-locked", "naive", "redlock", "redlock-delay",
                                                     "redlock-global"};
  return k_names;
}

bool strategy_uses_redis(std::string_view name) { return name.starts_with("redlock"); }

std::unique_ptr<claim_strategy> make_strategy(std::string_view name, db_session& db,
                                              const strategy_options& options) {
  if (strategy_uses_redis(name) && options.redis_nodes.empty())
    throw voucherd_error{failure_kind::usage,
                         fmt::format("strategy {} needs --redis-nodes redis://host:port,...", name)};
  if (name == "skip-locked") return std::make_unique<skip_locked_strategy>(db, options);
  if (name == "naive") return std::make_unique<naive_strategy>(db, options);
  if (name == "redlock") return std::make_unique<redlock_item_strategy>(db, options, false);
  if (name == "redlock-delay") return std::make_unique<redlock_item_strategy>(db, options, true);
  if (name == "redlock-global") return std::make_unique<redlock_global_strategy>(db, options);
  std::string known;
  for (auto n : strategy_names()) known += fmt::format("{}{}", known.empty() ? "" : ", ", n);
  throw voucherd_error{failure_kind::usage, fmt::format("unknown strategy '{}' (known: {})", name, known)};
}

}  // namespace voucherd
