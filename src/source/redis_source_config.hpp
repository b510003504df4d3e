#pragma once
// What the Redis Streams source is told (voucherd worker --source redis),
// with its defaults as named constants.
#include <chrono>
#include <string>

namespace voucherd {

struct redis_source_config {
  static constexpr const char* k_default_url = "redis://127.0.0.1:6379";
  static constexpr const char* k_default_stream = "voucherd:messages";
  static constexpr const char* k_default_group = "voucherd";
  static constexpr std::chrono::milliseconds k_default_claim_idle{30000};
  static constexpr int k_default_max_deliveries = 5;

  std::string url = k_default_url;
  std::string stream = k_default_stream;
  std::string group = k_default_group;
  std::string consumer;            // default: <hostname>-<pid>
  std::string dead_letter_stream;  // default: <stream>:dead
  // A message pending this long on a consumer is presumed orphaned (its
  // consumer died) and taken over with XAUTOCLAIM.
  std::chrono::milliseconds claim_idle = k_default_claim_idle;
  // A message handed out more often than this is dead-lettered instead
  // (worker_config::max_deliveries, copied here by make_source).
  int max_deliveries = k_default_max_deliveries;
};

}  // namespace voucherd
