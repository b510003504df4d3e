// parse_notify_option and notify_config::validate: the --notify flag, checked
// once at start-up with precise messages.
#include <fmt/format.h>

#include "common/failure.hpp"
#include "common/tls_context.hpp"
#include "notify/outbox_dispatcher.hpp"
#include "notify/redis_sink.hpp"
#include "notify/webhook_sink.hpp"

namespace voucherd {

namespace {
constexpr const char* k_default_redis_url = "redis://127.0.0.1:6379";
}

notify_config parse_notify_option(const std::string& notify, const std::string& redis_url) {
  notify_config config;
  constexpr std::string_view k_webhook = "webhook:";
  if (notify == "log") {
    config.sink = notify_sink_kind::log;
  } else if (notify.rfind(k_webhook, 0) == 0) {
    config.sink = notify_sink_kind::webhook;
    config.webhook_url = notify.substr(k_webhook.size());
    if (config.webhook_url.empty())
      throw voucherd_error{failure_kind::usage, "--notify webhook: needs a URL, e.g. webhook:https://hooks.example.com/voucher"};
  } else if (notify == "redis") {
    config.sink = notify_sink_kind::redis;
    config.redis_url = redis_url.empty() ? k_default_redis_url : redis_url;
  } else {
    throw voucherd_error{failure_kind::usage,
                         fmt::format("--notify '{}': expected log, webhook:URL or redis", notify)};
  }
  config.validate();
  return config;
}

void notify_config::validate() const {
  auto fail = [](std::string message) { throw voucherd_error{failure_kind::usage, std::move(message)}; };
  // An https webhook's trust is loaded now, so that an unreadable CA file
  // stops the start rather than failing every delivery.
  if (sink == notify_sink_kind::webhook && parse_http_url(webhook_url).https) make_client_tls_context(webhook_ca_file);
  if (sink == notify_sink_kind::redis) {
    parse_redis_url(redis_url);
    if (redis_stream.empty()) fail("notify: the redis stream name must not be empty");
  }
  if (max_attempts < 1) fail(fmt::format("notify: max attempts must be >= 1 (got {})", max_attempts));
  if (backoff_base.count() < 0 || backoff_cap < backoff_base)
    fail(fmt::format("notify: need 0 <= backoff base ({} ms) <= backoff cap ({} ms)", backoff_base.count(),
                     backoff_cap.count()));
  if (!(jitter >= 0 && jitter <= 1)) fail(fmt::format("notify: jitter must be 0..1 (got {})", jitter));
  if (webhook_timeout.count() <= 0) fail("notify: the sink timeout must be positive");
  if (poll_interval.count() <= 0 || listen_poll_interval.count() <= 0) fail("notify: the poll interval must be positive");
  if (batch_size < 1 || batch_size > 1000) fail(fmt::format("notify: batch size must be 1..1000 (got {})", batch_size));
}

}  // namespace voucherd
