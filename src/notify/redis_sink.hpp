#pragma once
// The redis sink: XADD of each notification to a stream (default
// voucherd:notifications) with the fields idempotency_key, campaign, user_id,
// voucher_id, code. Accepted when XADD returns an entry id. The connection is
// opened on demand and dropped on any error (the next delivery reconnects);
// connect and each command are bounded by the sink timeout.
#include <chrono>
#include <memory>
#include <string>

#include <hiredis/hiredis.h>

#include "notify/notification_sink.hpp"

namespace voucherd {

struct redis_address {
  std::string host = "127.0.0.1";
  int port = 6379;
};

// redis://HOST[:PORT]; throws voucherd_error(usage) naming the problem.
redis_address parse_redis_url(const std::string& url);

class redis_sink final : public notification_sink {
 public:
  redis_sink(redis_address address, std::string stream, std::chrono::milliseconds timeout)
      : address_{std::move(address)}, stream_{std::move(stream)}, timeout_{timeout} {}
  std::optional<std::string> deliver(const notification& n) override;
  std::chrono::milliseconds worst_case() const override { return 2 * timeout_; }

 private:
  struct context_deleter {
    void operator()(redisContext* c) const { redisFree(c); }
  };

  redis_address address_;
  std::string stream_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<redisContext, context_deleter> ctx_;
};

}  // namespace voucherd
