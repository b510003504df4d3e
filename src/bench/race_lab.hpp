#pragma once
// The race lab (SPEC section 7): runs P pod processes of one claim strategy
// against a fresh campaign, then audits what each user was told against what
// the database says they own.
//
// How a run goes:
//  1. a fresh campaign `bench-<strategy>-<time>-<n>` with V random codes (or
//     the given ones);
//  2. P pods (`voucherd bench-pod`, spawned with posix_spawn) connect, report
//     ready on a pipe, and all start together when the parent closes the
//     start pipe; pod i claims for users i+1, i+1+P, ... (M users in all);
//  3. every pod appends one JSON line per message to its own record file:
//     the outcome it told the user (status, code) and the claim latency. This
//     record is written outside any claim transaction, so it is independent of
//     what the database ends up saying;
//  4. with pause > 0, pod 0 stops itself (SIGSTOP) right before the write of
//     its k_pause_at_claim-th claim, i.e. while it holds its lock for the
//     strategies that take one; the parent sees the stop (waitpid WUNTRACED),
//     lets it stay frozen for `pause`, then sends SIGCONT;
//  5. the audit: notified_not_owner (a user was told a code someone else owns),
//     users_with_multiple_vouchers, owners_not_notified (a code is owned by a
//     user who was never told it), lost_messages (a user with no recorded
//     outcome), double_notified (a user with more than one notification in
//     the outbox).
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "redis/redis_node.hpp"

namespace voucherd::bench {

inline constexpr int k_pause_at_claim = 3;
inline constexpr std::size_t k_bench_code_length = 10;

struct bench_config {
  std::string strategy = "skip-locked";
  int pods = 2;
  std::int64_t messages = 1000;
  std::int64_t vouchers = 1000;
  std::chrono::milliseconds work{0};
  std::chrono::milliseconds jitter{0};
  std::chrono::milliseconds lock_ttl{1000};
  std::chrono::milliseconds release_delay{5};
  std::chrono::milliseconds pause{0};
  std::vector<redis_endpoint> redis_nodes;
  std::string database_url;
  std::uint64_t seed = 1;
  // The pool's codes, in id order; empty: `vouchers` random codes. The story
  // uses its own two codes here.
  std::vector<std::string> codes;

  // Throws voucherd_error(usage) naming the first bad value.
  void validate() const;
};

struct bench_report {
  bench_config config;
  std::string campaign;
  double elapsed_s = 0;
  double claims_per_s = 0;
  double latency_p50_ms = 0;
  double latency_p99_ms = 0;
  std::int64_t claimed = 0;
  std::int64_t sold_out = 0;
  std::int64_t notified_not_owner = 0;
  std::int64_t users_with_multiple_vouchers = 0;
  std::int64_t owners_not_notified = 0;
  std::int64_t lost_messages = 0;
  std::int64_t double_notified = 0;

  std::int64_t violations() const {
    return notified_not_owner + users_with_multiple_vouchers + owners_not_notified + lost_messages +
           double_notified;
  }
  // "redlock-global", or "redlock-global + pause" for a paused run.
  std::string label() const;
};

// One JSON line: the fields of SPEC section 7 plus the run's settings.
std::string to_json_line(const bench_report& report);

// Runs one configuration. config.redis_nodes must be set for redlock*
// strategies. `self_exe` is the voucherd binary that serves bench-pod.
bench_report run_bench(const bench_config& config, const std::string& self_exe);

// The side-by-side Markdown table of several runs.
std::string markdown_table(const std::vector<bench_report>& reports);

}  // namespace voucherd::bench
