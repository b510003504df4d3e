#pragma once
// The HTTP source's group commit and back-pressure settings (worker flags
// --http-queue-max, --http-deadline-ms; --batch), kept apart from
// http_source.hpp so worker_config can hold them without Asio.
#include <chrono>
#include <cstddef>

namespace voucherd {

struct http_source_limits {
  // Requests waiting unclaimed, at most: with bodies of up to
  // k_max_message_bytes, this bounds the memory they hold; the deadline bounds
  // how long they wait.
  static constexpr std::size_t k_default_queue_max = 1024;
  static constexpr std::size_t k_max_queue_max = 1'000'000;
  static constexpr std::chrono::milliseconds k_default_deadline{2000};
  // Messages per transaction when the worker's --batch is not given: enough
  // for the requests of many concurrent clients to share one commit, while a
  // transaction stays short (claim_batch of 50 rows).
  static constexpr std::size_t k_default_batch = 50;

  std::size_t queue_max = k_default_queue_max;
  std::chrono::milliseconds deadline = k_default_deadline;
  std::size_t batch = k_default_batch;
};

}  // namespace voucherd
