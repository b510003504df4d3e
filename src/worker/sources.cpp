#include "worker/sources.hpp"

#include <cstdio>

#include "source/pg_queue_source.hpp"
#include "source/redis_source.hpp"
#include "source/stdin_source.hpp"

namespace voucherd {

std::unique_ptr<message_source> make_source(const worker_config& config) {
  const std::size_t capacity = static_cast<std::size_t>(config.concurrency) * config.batch * 2;
  switch (config.source) {
    case source_kind::stdin_lines: return std::make_unique<stdin_source>(0, stdout, capacity);
    case source_kind::pg: return std::make_unique<pg_queue_source>();
    case source_kind::redis: {
      auto redis = config.redis;
      redis.max_deliveries = config.max_deliveries;
      return std::make_unique<redis_source>(redis, capacity);
    }
  }
  return nullptr;
}

}  // namespace voucherd
