#include "bench/bench_pod.hpp"
#include "db/classify.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/failure.hpp"
#include "db/session.hpp"

namespace voucherd::bench {

namespace {

// Tells the parent this pod is connected, then blocks until the parent closes
// the start pipe (EOF on stdin): all pods start at the same moment.
void ready_and_wait_for_start() {
  const char ready = 'r';
  if (write(k_ready_fd, &ready, 1) != 1)
    throw voucherd_error{failure_kind::internal, "bench-pod: cannot report ready"};
  close(k_ready_fd);
  char buf;
  while (read(STDIN_FILENO, &buf, 1) > 0) {
  }
}

}  // namespace

std::string bench_user(std::int64_t n) { return std::to_string(n + 1); }

int run_pod(pod_config c) {
  int claims_seen = 0;
  if (c.pause_at > 0) {
    c.options.before_write = [&claims_seen, pause_at = c.pause_at] {
      if (++claims_seen == pause_at) raise(SIGSTOP);
    };
  }
  std::unique_ptr<db_session> db = std::make_unique<db_session>(c.database_url);
  auto strategy = make_strategy(c.strategy, *db, c.options);
  std::ofstream record{c.record_path, std::ios::app};
  if (!record) throw voucherd_error{failure_kind::internal, fmt::format("cannot write {}", c.record_path)};
  ready_and_wait_for_start();

  for (std::int64_t n = c.pod; n < c.messages; n += c.pods) {
    const claim_request request{c.campaign, bench_user(n), {}};
    boost::json::object line;
    line["user"] = request.user_id;
    const auto start = std::chrono::steady_clock::now();
    for (int attempt = 1;; ++attempt) {
      try {
        if (!db->is_open()) {
          db = std::make_unique<db_session>(c.database_url);
          strategy = make_strategy(c.strategy, *db, c.options);
        }
        const auto outcome = strategy->claim(request);
        line["status"] = to_string(outcome.status);
        if (outcome.owns_voucher()) {
          line["code"] = outcome.code;
          line["voucher_id"] = *outcome.voucher_id;
        }
        break;
      } catch (const std::exception& e) {
        if (classify(e) != failure_kind::transient || attempt >= k_pod_claim_attempts) {
          line["status"] = "error";
          line["reason"] = e.what();
          break;
        }
      }
    }
    const std::chrono::duration<double, std::milli> ms = std::chrono::steady_clock::now() - start;
    line["ms"] = ms.count();
    record << boost::json::serialize(line) << '\n' << std::flush;
  }
  return record ? k_exit_ok : k_exit_internal;
}

}  // namespace voucherd::bench
