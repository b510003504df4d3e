#pragma once
// How a worker claims: the switch of SPEC section 7. `skip-locked` (the
// default) is voucherd's atomic claim; the others reproduce the story's
// lock-based designs, only so that the race lab can compare them side by side.
//
//  skip-locked     sql/claim_one.sql via claim_core                     correct
//  naive           SELECT first free; UPDATE that id                    races
//  redlock         SELECT first free; Redlock voucher_item:<id>; UPDATE; release
//                                                                       races (lock taken after the read)
//  redlock-delay   as redlock, release delayed by release_delay        fewer races, still races
//  redlock-global  Redlock campaign:<name> around SELECT + UPDATE      correct while the lock holds;
//                                                                       unsafe when a holder pauses past its TTL
//
// The lock-based strategies write the outbox notification of the code they
// read in the transaction of their UPDATE (so "told" can be audited against
// "owns"), and bypass the I1 trigger with voucherd.unguarded in that
// transaction: they must behave like the story's unguarded schema. They do
// not look at the campaign window, deduplicate a user's redelivery, or record
// message_outcome: the story's code did none of that either.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "claim/claim_outcome.hpp"
#include "claim/claim_request.hpp"
#include "db/session.hpp"
#include "redis/redis_node.hpp"

namespace voucherd {

inline constexpr std::string_view k_default_strategy = "skip-locked";

struct strategy_options {
  // Redlock nodes; required by the redlock* strategies, ignored by the others.
  std::vector<redis_endpoint> redis_nodes;
  std::chrono::milliseconds lock_ttl{1000};
  // redlock-delay: how long the lock is kept after the UPDATE committed.
  std::chrono::milliseconds release_delay{5};
  // Simulated work (network, GC) between the read and the write: a uniform
  // sleep in [work - jitter, work + jitter], drawn from a generator seeded
  // with `seed`. skip-locked, which has no such gap, sleeps it before its
  // statement, so every strategy pays the same simulated latency.
  std::chrono::milliseconds work{0};
  std::chrono::milliseconds jitter{0};
  std::uint64_t seed = 1;
  // Race-lab hook, called right before the write (while the lock is held, for
  // the strategies that hold one). The bench uses it to freeze a lock holder.
  std::function<void()> before_write;
};

class claim_strategy {
 public:
  virtual ~claim_strategy() = default;
  // Same contract as blocking_claimer::claim: outcomes are values; bad input is
  // rejected before the database is touched; infrastructure failures throw.
  virtual claim_outcome claim(const claim_request& request) = 0;
  virtual std::string_view name() const = 0;
};

// The strategy names, in the order of the table above.
const std::vector<std::string_view>& strategy_names();
bool strategy_uses_redis(std::string_view name);

// Throws voucherd_error(usage) for an unknown name, or a redlock* strategy
// without Redis nodes. The strategy keeps a reference to db.
std::unique_ptr<claim_strategy> make_strategy(std::string_view name, db_session& db,
                                              const strategy_options& options);

}  // namespace voucherd
