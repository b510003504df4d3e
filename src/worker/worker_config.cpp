#include "worker/worker_config.hpp"

#include <algorithm>
#include <thread>

#include <fmt/format.h>

#include "claim/claim_request.hpp"
#include "common/failure.hpp"
#include "http/bearer_token.hpp"
#include "http/http_server.hpp"
#include "notify/outbox_dispatcher.hpp"

namespace voucherd {

const char* to_string(source_kind kind) {
  switch (kind) {
    case source_kind::stdin_lines: return "stdin";
    case source_kind::pg: return "pg";
    case source_kind::redis: return "redis";
  }
  return "pg";
}

void worker_config::validate() const {
  auto fail = [](std::string what) { throw voucherd_error{failure_kind::usage, std::move(what)}; };
  if (strategy != k_strategy)
    fail(fmt::format("--strategy: the worker daemon claims with {} only; '{}' is a comparison strategy, "
                     "run it with `voucherd bench --strategy {}`", k_strategy, strategy, strategy));
  if (!campaign.empty())
    if (auto p = campaign_name_problem(campaign)) fail(fmt::format("--campaign: {}", *p));
  if (concurrency < 1 || concurrency > k_max_concurrency)
    fail(fmt::format("--concurrency must be 1..{}, got {}", k_max_concurrency, concurrency));
  if (threads < 0 || threads > k_max_threads)
    fail(fmt::format("--threads must be 0 (one per CPU) .. {}, got {}", k_max_threads, threads));
  if (threads > 1 && source != source_kind::pg)
    fail(fmt::format("--threads {}: only --source pg runs its claimers on several threads", threads));
  if (batch < 1 || batch > k_max_batch) fail(fmt::format("--batch must be 1..{}, got {}", k_max_batch, batch));
  if (shutdown_grace.count() < 0) fail("--shutdown-grace-ms must not be negative");
  if (max_deliveries < 1) fail(fmt::format("--max-deliveries must be at least 1, got {}", max_deliveries));
  if (source == source_kind::redis) {
    if (!redis.url.starts_with("redis://")) fail(fmt::format("--redis-url must start with redis://, got '{}'", redis.url));
    if (redis.stream.empty()) fail("--stream must not be empty");
    if (redis.group.empty()) fail("--group must not be empty");
    if (redis.claim_idle.count() < 1) fail("--claim-idle-ms must be at least 1");
  }
  const bool tls = !http_tls.cert_file.empty() || !http_tls.key_file.empty();
  if (http_listen.empty()) {
    if (!http_token.empty()) fail(fmt::format("{}: a bearer token needs --http", http_token_source));
    if (tls) fail("--http-tls-cert/--http-tls-key need --http");
  } else {
    check_listen_address(http_listen, !http_token.empty());
    if (!http_token.empty()) bearer_token{http_token, http_token_source};
    if (http_tls.cert_file.empty() != http_tls.key_file.empty())
      fail("--http-tls-cert and --http-tls-key go together: give both, or neither for plain HTTP");
    if (tls) make_server_tls_context(http_tls);
    if (http.batch < 1 || http.batch > k_max_batch)
      fail(fmt::format("--batch must be 1..{}, got {}", k_max_batch, http.batch));
    if (http.queue_max < 1 || http.queue_max > http_source_limits::k_max_queue_max)
      fail(fmt::format("--http-queue-max must be 1..{}, got {}", http_source_limits::k_max_queue_max, http.queue_max));
    if (http.deadline.count() < 1) fail(fmt::format("--http-deadline-ms must be at least 1, got {}", http.deadline.count()));
    if (http.claimers && (*http.claimers < 1 || *http.claimers > concurrency))
      fail(fmt::format("--http-claimers must be 1..{} (--concurrency), got {}", concurrency, *http.claimers));
  }
  if (!notify.empty()) notify_settings();
}

int worker_config::http_claimers() const {
  if (http.claimers) return std::min(*http.claimers, concurrency);
  if (http.batch <= 1) return concurrency;  // no group commit: one request a transaction
  return std::min(http_source_limits::k_default_group_claimers, concurrency);
}

notify_config worker_config::notify_settings() const {
  auto settings = parse_notify_option(notify, notify_redis_url);
  settings.webhook_ca_file = webhook_ca_file;
  settings.validate();
  return settings;
}

int worker_config::claimer_threads() const {
  if (source != source_kind::pg) return 1;
  const int wanted = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::clamp(wanted, 1, concurrency);
}

}  // namespace voucherd
