// Redlock against real, independent redis-server processes that this test
// starts (and stops) itself: mutual exclusion under contention, the majority
// rule with nodes down, expiry after the TTL, and that only the token holder
// can release or extend.
#include <doctest/doctest.h>

#include <atomic>
#include <barrier>
#include <memory>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "redis/redis_server.hpp"
#include "bench/redlock.hpp"
#include "support/wait.hpp"

using namespace voucherd;
using namespace voucherd::test;
using namespace std::chrono_literals;

namespace {

// Threads each doing `rounds` read-increment-write steps on a shared counter,
// with a gap between the read and the write; under `use_lock` each step is
// done inside a Redlock. Returns the final counter.
long contend(const std::vector<redis_endpoint>& nodes, int threads, int rounds, bool use_lock) {
  std::atomic<long> counter{0};
  std::atomic<int> lock_failures{0};
  std::barrier start{threads};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      redlock lock{nodes, redlock_options{.ttl = 5000ms, .retry_count = 100000, .retry_delay = 2ms}};
      start.arrive_and_wait();
      for (int i = 0; i < rounds; ++i) {
        std::optional<redlock_lease> lease;
        if (use_lock && !(lease = lock.acquire("counter"))) {
          ++lock_failures;
          continue;
        }
        // Non-atomic on purpose: load, wait, store.
        const long seen = counter.load();
        std::this_thread::sleep_for(200us);
        counter.store(seen + 1);
        if (lease) lock.release(*lease);
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK_MESSAGE(lock_failures.load() == 0, "no acquisition may give up with every node up");
  return counter.load();
}

}  // namespace

TEST_CASE("under contention a Redlock admits one holder at a time: a read-increment-write counter ends exact") {
  constexpr int k_threads = 4, k_rounds = 40;
  for (int n : {3, 5}) {
    CAPTURE(n);
    const auto servers = start_redis_servers(n);
    const auto nodes = endpoints_of(servers);
    const long unlocked = contend(nodes, k_threads, k_rounds, false);
    // The control: without the lock the same steps lose updates, so the
    // locked run below could fail if the lock did not exclude.
    CHECK_MESSAGE(unlocked < k_threads * k_rounds,
                  fmt::format("without a lock {} threads should lose increments, got {}", k_threads, unlocked));
    const long locked = contend(nodes, k_threads, k_rounds, true);
    CHECK_MESSAGE(locked == k_threads * k_rounds,
                  fmt::format("with {} nodes: counter {} after {} locked increments", n, locked, k_threads * k_rounds));
  }
}

TEST_CASE("acquisition succeeds with a minority of nodes down and fails with a majority down") {
  for (int n : {3, 5}) {
    CAPTURE(n);
    auto servers = start_redis_servers(n);
    redlock lock{endpoints_of(servers), redlock_options{.ttl = 2000ms, .retry_count = 1, .retry_delay = 5ms}};
    const int minority = (n - 1) / 2;
    for (int i = 0; i < minority; ++i) servers[static_cast<std::size_t>(i)]->kill_now();
    auto lease = lock.acquire(fmt::format("minority-down-{}", n));
    REQUIRE_MESSAGE(lease.has_value(), fmt::format("{} of {} nodes down must still grant the lock", minority, n));
    CHECK_MESSAGE(lease->validity > 0ms, "a granted lease has validity left");
    CHECK_MESSAGE(lock.release(*lease), "the holder releases on the live majority");

    servers[static_cast<std::size_t>(minority)]->kill_now();
    const auto t0 = std::chrono::steady_clock::now();
    const auto refused = lock.acquire(fmt::format("majority-down-{}", n));
    CHECK_MESSAGE(!refused.has_value(), fmt::format("{} of {} nodes down must refuse the lock", minority + 1, n));
    CHECK_MESSAGE(std::chrono::steady_clock::now() - t0 < 2s, "dead nodes cost only their short timeout");
  }
}

TEST_CASE("a lock expires after its TTL and can then be taken by another client") {
  const auto servers = start_redis_servers(3);
  const auto nodes = endpoints_of(servers);
  constexpr auto k_ttl = 300ms;
  redlock first{nodes, redlock_options{.ttl = k_ttl, .retry_count = 0}};
  redlock second{nodes, redlock_options{.ttl = k_ttl, .retry_count = 0}};
  const auto lease = first.acquire("expiring");
  REQUIRE_MESSAGE(lease.has_value(), "the first client gets the free lock");
  CHECK_MESSAGE(lease->validity < k_ttl, "validity is the TTL minus elapsed time and drift");
  CHECK_MESSAGE(!second.acquire("expiring").has_value(), "a held lock is refused to another client");
  // The other client asks until the nodes have let the key expire; by then
  // the first lease (its validity is the TTL less drift) has run out too.
  std::optional<redlock_lease> taken;
  CHECK_MESSAGE(wait_until([&] { return (taken = second.acquire("expiring")).has_value(); }, 10s),
                "after the TTL the lock is free for the next client");
  CHECK_MESSAGE(!lease->still_valid(), "the lease says it has run out once another client holds the lock");
  CHECK_MESSAGE(!first.release(*lease), "the expired holder's release deletes nothing");
  CHECK_MESSAGE(!second.acquire("expiring").has_value(), "the new holder keeps the lock after that release");
}

TEST_CASE("a non-owner can neither release nor extend a lock; the owner can do both") {
  const auto servers = start_redis_servers(5);
  const auto nodes = endpoints_of(servers);
  redlock owner{nodes, redlock_options{.ttl = 5000ms, .retry_count = 0}};
  redlock other{nodes, redlock_options{.ttl = 5000ms, .retry_count = 0}};
  auto lease = owner.acquire("owned");
  REQUIRE_MESSAGE(lease.has_value(), "the owner gets the free lock");
  redlock_lease forged = *lease;
  forged.token = random_lock_token();
  CHECK_MESSAGE(forged.token != lease->token, "tokens are drawn fresh");
  CHECK_MESSAGE(!other.release(forged), "a release with another token must fail");
  CHECK_MESSAGE(!other.extend(forged, 10000ms), "an extend with another token must fail");
  CHECK_MESSAGE(!other.acquire("owned").has_value(), "the lock is still held after the forged release");
  CHECK_MESSAGE(owner.extend(*lease, 8000ms), "the owner extends its lock");
  CHECK_MESSAGE(lease->validity > 5000ms, "the extended lease counts from the new TTL");
  CHECK_MESSAGE(owner.release(*lease), "the owner releases its lock");
  CHECK_MESSAGE(other.acquire("owned").has_value(), "a released lock is free at once");
}

TEST_CASE("a Redlock reconnects to nodes that come back after a crash") {
  auto servers = start_redis_servers(3);
  redlock lock{endpoints_of(servers), redlock_options{.ttl = 2000ms, .retry_count = 0}};
  REQUIRE_MESSAGE(lock.acquire("before").has_value(), "all nodes up: granted");
  servers[0]->kill_now();
  servers[1]->kill_now();
  CHECK_MESSAGE(!lock.acquire("while-down").has_value(), "2 of 3 nodes down: refused");
  servers[0]->restart();
  servers[1]->restart();
  const auto lease = lock.acquire("after");
  CHECK_MESSAGE(lease.has_value(), "the same client is granted the lock once the nodes are back");
  if (lease) CHECK_MESSAGE(lock.release(*lease), "and releases it on the reconnected majority");
}
