#pragma once
// Waiting on a condition, never on the clock: a test that needs something to
// have happened polls for it with a deadline, and the deadline only bounds a
// failure (it is generous: the machine may be a loaded 2-core VM).
#include <chrono>
#include <functional>
#include <thread>

namespace voucherd::test {

// Polls `done` every 20 ms until it holds or `timeout` passes; whether it held.
inline bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
  return done();
}

}  // namespace voucherd::test
