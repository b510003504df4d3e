#pragma once
// GET /readyz behind one probe at a time: every request that arrives while
// the database is being probed shares that probe's answer, and an answer is
// reused for `fresh` after it came. Without this each /readyz opened its own
// database connection, so an unauthenticated flood of 300 requests opened 300
// (found probing the port with wrk, 2026-11-28).
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "http/http_server.hpp"

namespace voucherd {

class shared_readiness {
 public:
  shared_readiness(readiness_probe inner, std::chrono::milliseconds fresh)
      : state_{std::make_shared<state>(std::move(inner), fresh)} {}

  // A readiness_probe that answers from the cache or joins the probe in flight.
  readiness_probe probe() const {
    return [s = state_](std::function<void(std::string)> answer) {
      std::unique_lock lock{s->mutex};
      const auto now = std::chrono::steady_clock::now();
      if (s->last && now - s->answered_at < s->fresh) {
        auto why_not = *s->last;
        lock.unlock();
        answer(std::move(why_not));
        return;
      }
      s->waiting.push_back(std::move(answer));
      if (s->probing) return;
      s->probing = true;
      lock.unlock();
      s->inner([s](std::string why_not) {
        std::vector<std::function<void(std::string)>> waiting;
        {
          std::lock_guard done{s->mutex};
          s->last = why_not;
          s->answered_at = std::chrono::steady_clock::now();
          s->probing = false;
          waiting.swap(s->waiting);
        }
        for (auto& w : waiting) w(why_not);
      });
    };
  }

 private:
  struct state {
    state(readiness_probe p, std::chrono::milliseconds f) : inner{std::move(p)}, fresh{f} {}
    readiness_probe inner;
    std::chrono::milliseconds fresh;
    std::mutex mutex;
    bool probing = false;
    std::vector<std::function<void(std::string)>> waiting;
    std::optional<std::string> last;
    std::chrono::steady_clock::time_point answered_at;
  };
  std::shared_ptr<state> state_;
};

}  // namespace voucherd
