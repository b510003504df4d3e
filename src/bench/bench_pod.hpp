#pragma once
// One pod of a race-lab run: a process that claims, one message at a time,
// for its share of the users, with one strategy, and records what it told
// each user. Started by run_bench as `voucherd bench-pod ...` with the start
// pipe on stdin and the ready pipe on fd k_ready_fd.
#include <cstdint>
#include <string>

#include "bench/claim_strategy.hpp"

namespace voucherd::bench {

inline constexpr int k_ready_fd = 3;
// A claim that fails transiently is tried again this many times in all
// before its message counts as lost.
inline constexpr int k_pod_claim_attempts = 5;

struct pod_config {
  std::string database_url;
  std::string strategy;
  std::string campaign;
  int pod = 0;
  int pods = 1;
  std::int64_t messages = 0;
  std::string record_path;
  // Stop this process (SIGSTOP) right before the write of this claim
  // (1-based); 0 = never.
  int pause_at = 0;
  strategy_options options;
};

// The user id of message n (0-based): "<n+1>", so users are 1..M as in the
// story.
std::string bench_user(std::int64_t n);

// Runs the pod: connect, report ready, wait for the start, claim, record.
// Returns the process exit status.
int run_pod(pod_config config);

}  // namespace voucherd::bench
