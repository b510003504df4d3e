#pragma once
// The webhook sink: an HTTP/1.1 POST of the notification's JSON to a URL, with
// an Idempotency-Key header (the outbox row's key; the same on every retry).
// Any 2xx is accepted; anything else (another status, refused connection,
// timeout) is a failed attempt that the dispatcher retries with backoff.
// One connection per delivery; the whole exchange (connect, request, response)
// is bounded by one timeout. Plain http:// only (no TLS).
#include <chrono>
#include <string>

#include "notify/notification_sink.hpp"

namespace voucherd {

struct http_url {
  std::string host;
  std::string port = "80";
  std::string target = "/";
};

// http://HOST[:PORT][/PATH]; throws voucherd_error(usage) naming the problem.
http_url parse_http_url(const std::string& url);

class webhook_sink final : public notification_sink {
 public:
  webhook_sink(http_url url, std::chrono::milliseconds timeout) : url_{std::move(url)}, timeout_{timeout} {}
  std::optional<std::string> deliver(const notification& n) override;
  std::chrono::milliseconds worst_case() const override { return timeout_; }

 private:
  http_url url_;
  std::chrono::milliseconds timeout_;
};

}  // namespace voucherd
