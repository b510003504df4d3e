#pragma once
// The webhook sink: an HTTP/1.1 POST of the notification's JSON to a URL, with
// an Idempotency-Key header (the outbox row's key; the same on every retry).
// Any 2xx is accepted; anything else (another status, refused connection,
// timeout, a certificate that fails verification) is a failed attempt that
// the dispatcher retries with backoff.
// One connection per delivery; the whole exchange (connect, TLS handshake,
// request, response) is bounded by one timeout.
//
// https:// URLs are verified: the receiver's certificate must chain to the
// system trust store or to the CA file given (notify_config::webhook_ca_file),
// and must name the URL's host (SNI is sent for a host name).
#include <chrono>
#include <memory>
#include <string>

#include <boost/asio/ssl/context.hpp>

#include "notify/notification_sink.hpp"

namespace voucherd {

struct http_url {
  bool https = false;
  std::string host;
  std::string port = "80";
  std::string target = "/";
};

// http[s]://HOST[:PORT][/PATH]; throws voucherd_error(usage) naming the problem.
http_url parse_http_url(const std::string& url);

class webhook_sink final : public notification_sink {
 public:
  // tls: the client context for an https URL (tls_context.hpp); ignored for http.
  webhook_sink(http_url url, std::chrono::milliseconds timeout,
               std::shared_ptr<boost::asio::ssl::context> tls = nullptr)
      : url_{std::move(url)}, timeout_{timeout}, tls_{std::move(tls)} {}
  std::optional<std::string> deliver(const notification& n) override;
  std::chrono::milliseconds worst_case() const override { return timeout_; }

 private:
  http_url url_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<boost::asio::ssl::context> tls_;
};

}  // namespace voucherd
