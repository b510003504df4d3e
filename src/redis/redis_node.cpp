#include "redis/redis_node.hpp"

#include <sys/time.h>

#include <charconv>

#include <fmt/format.h>

#include "common/failure.hpp"

namespace voucherd {

namespace {

constexpr std::string_view k_scheme = "redis://";

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

redis_endpoint parse_one(std::string_view entry) {
  const auto bad = [&](const char* why) {
    return voucherd_error{failure_kind::usage,
                          fmt::format("bad Redis node '{}': {} (expected redis://host:port)", entry, why)};
  };
  if (!entry.starts_with(k_scheme)) throw bad("missing redis:// scheme");
  std::string_view rest = entry.substr(k_scheme.size());
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  const auto colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0) throw bad("missing host or port");
  redis_endpoint e;
  e.host = std::string(rest.substr(0, colon));
  const auto port_text = rest.substr(colon + 1);
  const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), e.port);
  if (ec != std::errc{} || end != port_text.data() + port_text.size() || e.port < 1 || e.port > 65535)
    throw bad("port must be 1..65535");
  return e;
}

}  // namespace

std::string redis_endpoint::url() const { return fmt::format("redis://{}:{}", host, port); }

std::vector<redis_endpoint> parse_redis_nodes(std::string_view csv) {
  std::vector<redis_endpoint> nodes;
  while (!csv.empty()) {
    const auto comma = csv.find(',');
    const auto entry = csv.substr(0, comma);
    if (!entry.empty()) nodes.push_back(parse_one(entry));
    if (comma == std::string_view::npos) break;
    csv.remove_prefix(comma + 1);
  }
  return nodes;
}

std::string to_string(const std::vector<redis_endpoint>& nodes) {
  std::string out;
  for (const auto& n : nodes) {
    if (!out.empty()) out += ',';
    out += n.url();
  }
  return out;
}

redis_node::redis_node(redis_endpoint endpoint, std::chrono::milliseconds timeout)
    : endpoint_{std::move(endpoint)}, timeout_{timeout} {}

bool redis_node::connect() {
  if (ctx_ && ctx_->err == 0) return true;
  ctx_.reset(redisConnectWithTimeout(endpoint_.host.c_str(), endpoint_.port, to_timeval(timeout_)));
  if (!ctx_ || ctx_->err != 0 || redisSetTimeout(ctx_.get(), to_timeval(timeout_)) != REDIS_OK) {
    ctx_.reset();
    return false;
  }
  return true;
}

redis_reply redis_node::command(const std::vector<std::string>& argv) {
  std::vector<std::vector<std::string>> one{argv};
  auto replies = pipeline(one);
  return replies.empty() ? nullptr : std::move(replies.front());
}

std::vector<redis_reply> redis_node::pipeline(const std::vector<std::vector<std::string>>& commands) {
  if (!connect()) return {};
  for (const auto& argv : commands) {
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    for (const auto& a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(ctx_.get(), static_cast<int>(argv.size()), ptrs.data(), lens.data()) != REDIS_OK) {
      ctx_.reset();
      return {};
    }
  }
  std::vector<redis_reply> replies;
  replies.reserve(commands.size());
  for (std::size_t i = 0; i < commands.size(); ++i) {
    void* raw = nullptr;
    // An I/O error or timeout: the context cannot be reused (a late reply
    // would be read as the answer to the next command).
    if (redisGetReply(ctx_.get(), &raw) != REDIS_OK || !raw || ctx_->err != 0) {
      if (raw) freeReplyObject(raw);
      ctx_.reset();
      return {};
    }
    replies.emplace_back(static_cast<redisReply*>(raw));
  }
  return replies;
}

}  // namespace voucherd
