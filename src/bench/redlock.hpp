#pragma once
// Redlock, as its author specifies it (https://redis.io/docs/manual/patterns/distributed-locks/),
// over N independent Redis servers. Kept only for the race lab (SPEC section 7):
// voucherd's own claim needs no external lock.
//
// acquire(resource):
//  1. draws a fresh random token (getrandom) and notes the start time;
//  2. runs `SET resource token NX PX ttl` on every node, each bounded by the
//     node timeout, so a dead node costs at most that much;
//  3. succeeds only if a majority (N/2+1) answered OK and the validity left,
//     ttl - elapsed - drift (drift = ttl/100 + 2 ms), is still positive;
//  4. otherwise deletes its token from every node (compare-and-delete) and
//     retries after a random delay, up to retry_count more times.
// release/extend run compare-and-delete / compare-and-pexpire Lua scripts on
// every node, so only the holder of the token can end or prolong its lock.
//
// Failure mode, and the point of the race lab: a lease is only a promise that
// no one else held the lock *while the validity lasted*. A holder that pauses
// (GC, SIGSTOP, a slow disk) past its validity keeps running as if it still
// held the lock; nothing fences its late writes. Not thread-safe: one redlock
// per thread or process.
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "redis/redis_node.hpp"

namespace voucherd {

inline constexpr std::chrono::milliseconds k_default_lock_ttl{1000};
inline constexpr int k_default_lock_retry_count = 3;
inline constexpr std::chrono::milliseconds k_default_lock_retry_delay{10};

struct redlock_options {
  std::chrono::milliseconds ttl = k_default_lock_ttl;
  // Attempts after the first one; each waits a random delay in
  // [0, retry_delay] first, so that contenders do not retry in lock step.
  int retry_count = k_default_lock_retry_count;
  std::chrono::milliseconds retry_delay = k_default_lock_retry_delay;
  std::chrono::milliseconds node_timeout = k_default_node_timeout;
};

struct redlock_lease {
  std::string resource;
  std::string token;
  // How long the lock is known to be held, counted from valid_from.
  std::chrono::milliseconds validity{0};
  std::chrono::steady_clock::time_point valid_from;

  bool still_valid() const { return std::chrono::steady_clock::now() < valid_from + validity; }
};

class redlock {
 public:
  // Throws voucherd_error(usage) when nodes is empty.
  redlock(const std::vector<redis_endpoint>& nodes, redlock_options options);

  // A lease, or nullopt after every attempt failed.
  std::optional<redlock_lease> acquire(const std::string& resource);
  // One attempt, no retry.
  std::optional<redlock_lease> try_acquire(const std::string& resource);

  // True when a majority of nodes deleted this lease's token. A lease that
  // expired (or was never ours) is not deleted: the compare fails.
  bool release(const redlock_lease& lease);
  // Resets the TTL to `ttl` on every node still holding this token; true, and
  // the lease's validity renewed, when a majority did it in time.
  bool extend(redlock_lease& lease, std::chrono::milliseconds ttl);

  std::size_t quorum() const { return nodes_.size() / 2 + 1; }
  const redlock_options& options() const { return options_; }

 private:
  std::chrono::milliseconds drift(std::chrono::milliseconds ttl) const;
  std::size_t release_everywhere(const std::string& resource, const std::string& token);

  std::vector<redis_node> nodes_;
  redlock_options options_;
  std::mt19937_64 rng_;
};

inline constexpr std::size_t k_lock_token_chars = 32;
// A fresh random token (getrandom, common/random.hpp): unique per acquisition.
std::string random_lock_token();

}  // namespace voucherd
