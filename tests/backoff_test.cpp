// The reconnect backoff (common/backoff.hpp): attempt k waits a uniformly
// random time in [base, min(cap, base * 2^k)]; reset() starts over; the same
// seed gives the same waits. No database needed; no clock either (the waits
// are values, nothing here sleeps).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "common/backoff.hpp"

using namespace voucherd;
using namespace std::chrono_literals;

namespace {

std::vector<std::chrono::milliseconds> waits(backoff& b, int n) {
  std::vector<std::chrono::milliseconds> out;
  for (int i = 0; i < n; ++i) out.push_back(b.next());
  return out;
}

}  // namespace

TEST_CASE("every wait lies between the base and the cap") {
  for (std::uint64_t seed = 1; seed <= 50; ++seed) {
    CAPTURE(seed);
    backoff b{seed, 50ms, 2000ms};
    for (const auto w : waits(b, 100)) {
      CHECK_MESSAGE(w >= 50ms, "a wait below the base: " << w.count() << " ms");
      CHECK_MESSAGE(w <= 2000ms, "a wait above the cap: " << w.count() << " ms");
    }
  }
  backoff defaults{1};
  for (const auto w : waits(defaults, 100))
    CHECK_MESSAGE((w >= backoff::k_default_base && w <= backoff::k_default_cap),
                  "the defaults bound the waits too: " << w.count() << " ms");
}

TEST_CASE("the ceiling doubles with each attempt until it reaches the cap") {
  constexpr std::chrono::milliseconds k_base{10}, k_cap{1000};
  auto doubled = [&](int k) { return std::chrono::milliseconds{k_base.count() << k}; };  // base * 2^k
  // Attempt k (from 0) waits at most base * 2^k; over 200 seeds some wait
  // of attempt k goes above the ceiling of attempt k - 1 (it grew).
  for (int k = 0; k < 10; ++k) {
    CAPTURE(k);
    const auto ceiling = std::min(k_cap, doubled(k));
    std::chrono::milliseconds highest{0};
    for (std::uint64_t seed = 1; seed <= 200; ++seed) {
      backoff b{seed, k_base, k_cap};
      const auto w = waits(b, k + 1).back();
      CHECK_MESSAGE(w <= ceiling, "attempt " << k << " waited " << w.count() << " ms, over its ceiling "
                                             << ceiling.count() << " ms");
      highest = std::max(highest, w);
    }
    if (k > 0 && doubled(k - 1) < k_cap)
      CHECK_MESSAGE(highest > doubled(k - 1),
                    "attempt " << k << " never waited longer than attempt " << k - 1 << " could: " << highest.count()
                               << " ms");
  }
  backoff first{7, k_base, k_cap};
  CHECK_MESSAGE(first.next() == k_base, "the first attempt waits the base exactly (its ceiling is the base)");
}

TEST_CASE("past the cap the waits stay capped, however many attempts") {
  backoff b{3, 50ms, 400ms};
  const auto all = waits(b, 1000);  // the shift stops at 2^20: no overflow
  CHECK_MESSAGE(*std::max_element(all.begin(), all.end()) <= 400ms, "no wait above the cap after 1000 attempts");
  CHECK_MESSAGE(*std::min_element(all.begin() + 10, all.end()) >= 50ms, "nor below the base");
  CHECK_MESSAGE(b.attempts() == 1000, "every attempt counted: " << b.attempts());
  backoff inverted{3, 100ms, 50ms};
  for (const auto w : waits(inverted, 20))
    CHECK_MESSAGE(w == 100ms, "a cap below the base waits the base: " << w.count() << " ms");
}

TEST_CASE("reset starts over: the next wait is the base again") {
  backoff b{11, 50ms, 2000ms};
  waits(b, 8);
  CHECK_MESSAGE(b.attempts() == 8, "eight attempts counted: " << b.attempts());
  b.reset();
  CHECK_MESSAGE(b.attempts() == 0, "reset clears the count: " << b.attempts());
  CHECK_MESSAGE(b.next() == 50ms, "the first wait after a reset is the base");
  CHECK_MESSAGE(b.next() <= 100ms, "and the second at most twice the base");
}

TEST_CASE("the same seed gives the same waits; another seed other waits") {
  backoff a{42, 50ms, 2000ms}, same{42, 50ms, 2000ms}, other{43, 50ms, 2000ms};
  const auto first = waits(a, 30), second = waits(same, 30), third = waits(other, 30);
  CHECK_MESSAGE(first == second, "one seed, one sequence of waits");
  CHECK_MESSAGE(first != third, "a fleet seeded apart does not reconnect in lockstep");
}
