#pragma once
// The redis sink: XADD of each notification to a stream (default
// voucherd:notifications) with the fields idempotency_key, campaign, user_id,
// voucher_id, code. Accepted when XADD returns an entry id. The connection
// (lock/redis_node) is opened on demand and dropped on any error, so the next
// delivery reconnects; connect and each command are bounded by the sink timeout.
#include <chrono>
#include <string>

#include "redis/redis_node.hpp"
#include "notify/notification_sink.hpp"

namespace voucherd {

// redis://HOST:PORT; throws voucherd_error(usage) naming the problem.
redis_endpoint parse_redis_url(const std::string& url);

class redis_sink final : public notification_sink {
 public:
  redis_sink(redis_endpoint endpoint, std::string stream, std::chrono::milliseconds timeout)
      : node_{std::move(endpoint), timeout}, stream_{std::move(stream)}, timeout_{timeout} {}
  std::optional<std::string> deliver(const notification& n) override;
  std::chrono::milliseconds worst_case() const override { return 2 * timeout_; }

 private:
  redis_node node_;
  std::string stream_;
  std::chrono::milliseconds timeout_;
};

}  // namespace voucherd
