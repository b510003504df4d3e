#pragma once
// The HTTP source's group commit and back-pressure settings (worker flags
// --http-queue-max, --http-deadline-ms, --http-claimers; --batch), kept apart from
// http_source.hpp so worker_config can hold them without Asio.
#include <chrono>
#include <cstddef>
#include <optional>

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

  // Claimers (transactions in flight) for POST /v1/claims under group
  // commit: the fewer there are, the more requests each transaction takes
  // and the fewer commits the same load costs. With wrk at 64 connections on
  // 2 cores (5 s each; README, "Group commit and back-pressure over HTTP"):
  // 8 claimers took about 10 requests a transaction and answered 8,377/s,
  // 2 answered 12,990 and 14,283/s, 1 17,026/s. Two keep a second transaction going while one
  // waits on a lock or is split around a bad message. At --batch 1 (no
  // group commit) the worker's --concurrency applies.
  static constexpr int k_default_group_claimers = 2;

  std::size_t queue_max = k_default_queue_max;
  std::chrono::milliseconds deadline = k_default_deadline;
  std::size_t batch = k_default_batch;
  std::optional<int> claimers;  // --http-claimers; none given: the default (worker_config::http_claimers)
};

}  // namespace voucherd
