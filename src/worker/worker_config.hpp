#pragma once
// Everything `voucherd worker` can be told, with its defaults as named
// constants. Filled from flags and environment by cli/cmd_worker.cpp,
// validated once by validate(); the worker itself never reads getenv.
#include <chrono>
#include <cstddef>
#include <string>

#include "common/tls_context.hpp"
#include "db/connection_settings.hpp"
#include "maintenance/retention.hpp"
#include "source/http_source_limits.hpp"
#include "source/redis_source_config.hpp"

namespace voucherd {

struct notify_config;

enum class source_kind { stdin_lines, pg, redis };

const char* to_string(source_kind kind);

struct worker_config {
  static constexpr int k_default_concurrency = 4;
  static constexpr int k_max_concurrency = 256;
  static constexpr int k_max_threads = 64;
  static constexpr std::size_t k_default_batch = 1;
  static constexpr std::size_t k_max_batch = 1000;
  // SIGTERM: in-flight transactions get this long to commit or roll back.
  static constexpr std::chrono::milliseconds k_default_shutdown_grace{8000};

  // The daemon claims with the atomic statement only; the lock-based
  // strategies of SPEC section 7 exist for comparison and run under
  // `voucherd bench`, which starts its own pods.
  static constexpr const char* k_strategy = "skip-locked";

  source_kind source = source_kind::pg;
  std::string strategy = k_strategy;
  std::string campaign;      // for messages that name none; may be empty
  std::string database_url;  // a libpq connection string (connection_settings::conninfo())
  pg_deadlines deadlines;    // the client-side bounds on every claimer connection
  transaction_pooling pooling;  // behind a transaction pooler: what each connection does itself
  // A message whose claim keeps failing with an error a retry cannot fix
  // (not a lost connection, a timeout or a deadlock) is tried alone, so that
  // its batch commits without it; after this many failed tries alone it is
  // rejected with the database's error and dead-lettered. Every source.
  int max_deliveries = redis_source_config::k_default_max_deliveries;
  int concurrency = k_default_concurrency;  // claimers = database connections
  // Threads the pg source's claimers run on; 0 = one per CPU, at most one per
  // claimer. Every other source runs on one thread.
  int threads = 0;
  std::size_t batch = k_default_batch;      // messages per transaction
  // pg source: take, claim and record plain messages in one statement
  // (sql/queue_claim.sql; queue_claim_one.sql at --batch 1), the rest
  // through the general path. Off (--pg-general-path): every message
  // through the general path, for comparison (scripts/bench) and diagnosis.
  bool pg_one_statement = true;
  std::string http_listen;   // "ADDR:PORT"; empty = no HTTP
  // The bearer token POST /v1/claims requires (the secret itself, read by
  // the command line from --http-token-file or the environment); empty =
  // none, which only a loopback address allows. Never logged.
  std::string http_token;
  std::string http_token_source;  // where it came from, for messages: "--http-token-file PATH"
  tls_server_files http_tls;      // --http-tls-cert/--http-tls-key; both empty = plain HTTP
  // POST /v1/claims: the batch its claimers take (--batch when given, else
  // http_source_limits::k_default_batch, so concurrent requests share a
  // commit), --http-queue-max and --http-deadline-ms.
  http_source_limits http;
  std::string notify;        // "log" | "webhook:URL" | "redis"; empty = no dispatcher
  std::string webhook_ca_file;  // https webhooks: a private CA besides the system store
  std::string notify_redis_url = redis_source_config::k_default_url;
  // The dispatcher's LISTEN connection (connection_settings::listen_conninfo());
  // "" = it polls (behind a transaction pooler without --listen-url).
  std::string notify_listen_url;
  // --prune-every: a retention sweep on this period; 0 = never.
  std::chrono::seconds prune_every{0};
  retention_config retention;
  redis_source_config redis;
  std::chrono::milliseconds shutdown_grace = k_default_shutdown_grace;

  // POST /v1/claims: how many claimers take its requests: http.claimers
  // when given, else k_default_group_claimers under group commit (a batch
  // above 1), else (--batch 1) concurrency; never more than concurrency.
  int http_claimers() const;

  // Throws voucherd_error(usage) naming the option and the allowed values,
  // or voucherd_error(config) for a file it names that cannot be used (the
  // HTTP certificate or key, the webhook CA) or an unusable token. Everything
  // the worker will need is checked here, before it starts anything.
  void validate() const;
  // The dispatcher's settings for --notify (validated).
  notify_config notify_settings() const;
  // The number of claimer threads this configuration runs: `threads`, or the
  // default it stands for.
  int claimer_threads() const;
};

}  // namespace voucherd
