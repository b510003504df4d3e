#pragma once
// The one Redis client (hiredis): an address, a connection opened on demand,
// and a timeout on both connecting and every command, so that a dead or
// frozen server costs at most that timeout (Redlock gives its nodes a short
// one so that they never block a claim).
// Any error drops the connection; the next command reconnects. Not thread-safe:
// one redis_node per thread.
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <hiredis/hiredis.h>

namespace voucherd {

inline constexpr std::chrono::milliseconds k_default_node_timeout{50};

struct redis_endpoint {
  std::string host;
  int port = 6379;

  std::string url() const;
};

// "redis://host:port,redis://host:port,...". Throws voucherd_error(usage) on a
// malformed list, naming the bad entry.
std::vector<redis_endpoint> parse_redis_nodes(std::string_view csv);
std::string to_string(const std::vector<redis_endpoint>& nodes);

struct reply_deleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using redis_reply = std::unique_ptr<redisReply, reply_deleter>;

class redis_node {
 public:
  redis_node(redis_endpoint endpoint, std::chrono::milliseconds timeout);

  // The reply, or nullptr when the node is unreachable, timed out, or the
  // connection broke (then it is dropped and reopened by the next call). A
  // Redis error reply (REDIS_REPLY_ERROR) is returned as a reply.
  redis_reply command(const std::vector<std::string>& argv);
  // Several commands sent before the first reply is read: one reply each, in
  // order, or none at all when the connection failed on the way.
  std::vector<redis_reply> pipeline(const std::vector<std::vector<std::string>>& commands);

  const redis_endpoint& endpoint() const { return endpoint_; }

 private:
  struct context_deleter {
    void operator()(redisContext* c) const { redisFree(c); }
  };

  bool connect();

  redis_endpoint endpoint_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<redisContext, context_deleter> ctx_;
};

}  // namespace voucherd
