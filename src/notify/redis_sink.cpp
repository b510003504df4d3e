#include "notify/redis_sink.hpp"

#include <fmt/format.h>

#include "common/failure.hpp"

namespace voucherd {

redis_endpoint parse_redis_url(const std::string& url) {
  if (url.find(',') != std::string::npos)
    throw voucherd_error{failure_kind::usage, fmt::format("--redis-url '{}': expected one redis://HOST:PORT", url)};
  return parse_redis_nodes(url).at(0);
}

std::optional<std::string> redis_sink::deliver(const notification& n) {
  const auto reply = node_.command({"XADD", stream_, "*", "idempotency_key", n.idempotency_key, "campaign",
                                    n.campaign, "user_id", n.user_id, "voucher_id", std::to_string(n.voucher_id),
                                    "code", n.code});
  const auto where = fmt::format("redis {}: XADD {}", node_.endpoint().url(), stream_);
  if (!reply) return fmt::format("{}: unreachable or timed out", where);
  if (reply->type == REDIS_REPLY_ERROR) return fmt::format("{}: {}", where, std::string(reply->str, reply->len));
  if (reply->type != REDIS_REPLY_STRING) return fmt::format("{}: unexpected reply type {}", where, reply->type);
  return std::nullopt;
}

}  // namespace voucherd
