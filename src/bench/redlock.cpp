#include "bench/redlock.hpp"

#include <thread>

#include <fmt/format.h>

#include "common/failure.hpp"
#include "common/random.hpp"

namespace voucherd {

namespace {

// Delete / prolong the key only if it still holds our token: without the
// compare, a holder whose lock expired would remove someone else's lock.
constexpr const char* k_release_script =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
constexpr const char* k_extend_script =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) "
    "else return 0 end";

bool is_ok(const redis_reply& r) {
  return r && r->type == REDIS_REPLY_STATUS && std::string_view(r->str, r->len) == "OK";
}

bool is_one(const redis_reply& r) { return r && r->type == REDIS_REPLY_INTEGER && r->integer == 1; }

}  // namespace

std::string random_lock_token() {
  // 32 hex digits: 128 bits from getrandom(2).
  return random_string(k_lock_token_chars, "0123456789abcdef");
}

redlock::redlock(const std::vector<redis_endpoint>& nodes, redlock_options options)
    : options_{options} {
  if (nodes.empty()) throw voucherd_error{failure_kind::usage, "Redlock needs at least one Redis node"};
  for (const auto& n : nodes) nodes_.emplace_back(n, options_.node_timeout);
  // Only the retry delays come from here; they need spread, not secrecy.
  rng_.seed(std::random_device{}());
}

std::chrono::milliseconds redlock::drift(std::chrono::milliseconds ttl) const {
  // Clocks of the nodes may run at slightly different rates: the spec's
  // allowance is 1% of the TTL, plus 2 ms for the PX granularity.
  return std::chrono::milliseconds{ttl.count() / 100 + 2};
}

std::optional<redlock_lease> redlock::try_acquire(const std::string& resource) {
  const auto token = random_lock_token();
  const auto start = std::chrono::steady_clock::now();
  const std::vector<std::string> set{"SET", resource, token, "NX", "PX", std::to_string(options_.ttl.count())};
  std::size_t acquired = 0;
  for (auto& node : nodes_)
    if (is_ok(node.command(set))) ++acquired;
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  const auto validity = options_.ttl - elapsed - drift(options_.ttl);
  if (acquired >= quorum() && validity.count() > 0) return redlock_lease{resource, token, validity, start};
  // A minority of nodes may hold our token now; free them at once instead of
  // letting them block the next contender until the TTL runs out.
  release_everywhere(resource, token);
  return std::nullopt;
}

std::optional<redlock_lease> redlock::acquire(const std::string& resource) {
  for (int attempt = 0;; ++attempt) {
    if (auto lease = try_acquire(resource)) return lease;
    if (attempt >= options_.retry_count) return std::nullopt;
    std::uniform_int_distribution<long> delay(0, options_.retry_delay.count());
    std::this_thread::sleep_for(std::chrono::milliseconds{delay(rng_)});
  }
}

std::size_t redlock::release_everywhere(const std::string& resource, const std::string& token) {
  const std::vector<std::string> eval{"EVAL", k_release_script, "1", resource, token};
  std::size_t released = 0;
  for (auto& node : nodes_)
    if (is_one(node.command(eval))) ++released;
  return released;
}

bool redlock::release(const redlock_lease& lease) {
  return release_everywhere(lease.resource, lease.token) >= quorum();
}

bool redlock::extend(redlock_lease& lease, std::chrono::milliseconds ttl) {
  const auto start = std::chrono::steady_clock::now();
  const std::vector<std::string> eval{"EVAL", k_extend_script, "1", lease.resource, lease.token,
                                      std::to_string(ttl.count())};
  std::size_t extended = 0;
  for (auto& node : nodes_)
    if (is_one(node.command(eval))) ++extended;
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  const auto validity = ttl - elapsed - drift(ttl);
  if (extended < quorum() || validity.count() <= 0) return false;
  lease.validity = validity;
  lease.valid_from = start;
  return true;
}

}  // namespace voucherd
