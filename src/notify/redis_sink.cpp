#include "notify/redis_sink.hpp"

#include <sys/time.h>

#include <array>

#include <fmt/format.h>

#include "common/failure.hpp"

namespace voucherd {

redis_address parse_redis_url(const std::string& url) {
  constexpr std::string_view k_scheme = "redis://";
  if (url.rfind(k_scheme, 0) != 0)
    throw voucherd_error{failure_kind::usage, fmt::format("--redis-url '{}': expected redis://HOST[:PORT]", url)};
  std::string authority = url.substr(k_scheme.size());
  if (!authority.empty() && authority.back() == '/') authority.pop_back();
  if (authority.find_first_of("/@") != std::string::npos)
    throw voucherd_error{failure_kind::usage,
                         fmt::format("--redis-url '{}': expected redis://HOST[:PORT] (no database, no credentials)", url)};
  redis_address out;
  const auto colon = authority.rfind(':');
  out.host = authority.substr(0, colon);
  if (colon != std::string::npos) {
    const std::string port = authority.substr(colon + 1);
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(port) == 0 || std::stoi(port) > 65535)
      throw voucherd_error{failure_kind::usage, fmt::format("--redis-url '{}': port must be 1..65535", url)};
    out.port = std::stoi(port);
  }
  if (out.host.empty()) throw voucherd_error{failure_kind::usage, fmt::format("--redis-url '{}': no host", url)};
  return out;
}

namespace {

struct reply_deleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};

timeval to_timeval(std::chrono::milliseconds d) {
  return timeval{static_cast<time_t>(d.count() / 1000), static_cast<suseconds_t>((d.count() % 1000) * 1000)};
}

}  // namespace

std::optional<std::string> redis_sink::deliver(const notification& n) {
  if (!ctx_) {
    ctx_.reset(redisConnectWithTimeout(address_.host.c_str(), address_.port, to_timeval(timeout_)));
    if (!ctx_ || ctx_->err) {
      std::string why = ctx_ ? ctx_->errstr : "out of memory";
      ctx_.reset();
      return fmt::format("redis: cannot connect to {}:{}: {}", address_.host, address_.port, why);
    }
    redisSetTimeout(ctx_.get(), to_timeval(timeout_));
  }
  const std::string voucher_id = std::to_string(n.voucher_id);
  const std::array<std::string_view, 13> args{
      "XADD", stream_, "*", "idempotency_key", n.idempotency_key, "campaign", n.campaign, "user_id",
      n.user_id, "voucher_id", voucher_id, "code", n.code};
  std::array<const char*, args.size()> argv;
  std::array<std::size_t, args.size()> lengths;
  for (std::size_t i = 0; i < args.size(); ++i) {
    argv[i] = args[i].data();
    lengths[i] = args[i].size();
  }
  std::unique_ptr<redisReply, reply_deleter> reply{static_cast<redisReply*>(
      redisCommandArgv(ctx_.get(), static_cast<int>(args.size()), argv.data(), lengths.data()))};
  if (!reply) {
    std::string why = ctx_->errstr;
    ctx_.reset();  // the connection is unusable after an I/O error or timeout
    return fmt::format("redis: XADD {}: {}", stream_, why);
  }
  if (reply->type == REDIS_REPLY_ERROR)
    return fmt::format("redis: XADD {}: {}", stream_, std::string(reply->str, reply->len));
  if (reply->type != REDIS_REPLY_STRING) return fmt::format("redis: XADD {}: unexpected reply", stream_);
  return std::nullopt;
}

}  // namespace voucherd
