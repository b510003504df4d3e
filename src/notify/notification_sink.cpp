#include "notify/notification_sink.hpp"

#include "common/tls_context.hpp"
#include "notify/log_sink.hpp"
#include "notify/outbox_dispatcher.hpp"
#include "notify/redis_sink.hpp"
#include "notify/webhook_sink.hpp"

namespace voucherd {

boost::json::object to_json(const notification& n) {
  boost::json::object j;
  j["idempotency_key"] = n.idempotency_key;
  j["campaign"] = n.campaign;
  j["user_id"] = n.user_id;
  j["voucher_id"] = n.voucher_id;
  j["code"] = n.code;
  return j;
}

std::unique_ptr<notification_sink> make_sink(const notify_config& config) {
  switch (config.sink) {
    case notify_sink_kind::log: return std::make_unique<log_sink>();
    case notify_sink_kind::webhook:
    {
      auto url = parse_http_url(config.webhook_url);
      auto tls = url.https ? make_client_tls_context(config.webhook_ca_file) : nullptr;
      return std::make_unique<webhook_sink>(std::move(url), config.webhook_timeout, std::move(tls));
    }
    case notify_sink_kind::redis:
      return std::make_unique<redis_sink>(parse_redis_url(config.redis_url), config.redis_stream,
                                          config.webhook_timeout);
  }
  return std::make_unique<log_sink>();
}

}  // namespace voucherd
