// worker: the daemon of SPEC section 5. Options and environment are read
// here, into worker_config, and validated once; the worker never reads the
// environment itself.
#include <unistd.h>

#include <cstdlib>
#include <limits>

#include <fmt/format.h>

#include "cli/commands.hpp"
#include "cli/retention_flags.hpp"
#include "common/failure.hpp"
#include "claim/metrics.hpp"
#include "worker/sources.hpp"
#include "worker/worker.hpp"

namespace voucherd::cli {

namespace {

// Environment fallbacks, below flags and above the built-in defaults.
constexpr const char* k_env_campaign = "VOUCHERD_CAMPAIGN";
constexpr const char* k_env_concurrency = "VOUCHERD_CONCURRENCY";
constexpr const char* k_env_batch = "VOUCHERD_BATCH";
constexpr const char* k_env_http_queue_max = "VOUCHERD_HTTP_QUEUE_MAX";
constexpr const char* k_env_http_claimers = "VOUCHERD_HTTP_CLAIMERS";
constexpr const char* k_env_http_deadline_ms = "VOUCHERD_HTTP_DEADLINE_MS";
constexpr const char* k_env_threads = "VOUCHERD_THREADS";
constexpr const char* k_env_redis_url = "VOUCHERD_REDIS_URL";
constexpr const char* k_env_notify = "VOUCHERD_NOTIFY";
constexpr const char* k_env_http_token_file = "VOUCHERD_HTTP_TOKEN_FILE";
constexpr const char* k_env_http_token = "VOUCHERD_HTTP_TOKEN";
constexpr const char* k_env_http_tls_cert = "VOUCHERD_HTTP_TLS_CERT";
constexpr const char* k_env_http_tls_key = "VOUCHERD_HTTP_TLS_KEY";
constexpr const char* k_env_webhook_ca_file = "VOUCHERD_WEBHOOK_CA_FILE";

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string{v} : fallback;
}

long env_number(const char* name, long fallback) { return env_long(name, "a number").value_or(fallback); }

int env_int(const char* name, int fallback) {
  return static_cast<int>(
      env_long(name, "a number", std::numeric_limits<int>::min(), std::numeric_limits<int>::max()).value_or(fallback));
}

source_kind parse_source(const std::string& s) {
  if (s == "stdin") return source_kind::stdin_lines;
  if (s == "pg") return source_kind::pg;
  if (s == "redis") return source_kind::redis;
  throw voucherd_error{failure_kind::usage, fmt::format("--source must be stdin, pg or redis, got '{}'", s)};
}

// The bearer token of --http: --http-token-file, else $VOUCHERD_HTTP_TOKEN_FILE,
// else $VOUCHERD_HTTP_TOKEN (for a secret store that injects the value).
// Sets config.http_token and where it came from; never echoes the token.
void read_http_token(const std::string& token_file_flag, worker_config& config) {
  const std::string file = env_or(k_env_http_token_file, "");
  const char* inline_token = std::getenv(k_env_http_token);
  if (!token_file_flag.empty()) {
    config.http_token = read_secret_line(token_file_flag, "HTTP token");
    config.http_token_source = fmt::format("--http-token-file {}", token_file_flag);
  } else if (!file.empty()) {
    config.http_token = read_secret_line(file, "HTTP token");
    config.http_token_source = fmt::format("{} {}", k_env_http_token_file, file);
  } else if (inline_token && *inline_token) {
    config.http_token = inline_token;
    config.http_token_source = k_env_http_token;
  }
}

std::string default_consumer() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return fmt::format("{}-{}", host, ::getpid());
}

}  // namespace

int run_worker(const args& a) {
  worker_config config;
  common_flags url_flag;
  std::string source = "pg";
  int concurrency = 0, threads = 0, http_claimers = 0;
  long batch = 0;
  bool general_path = false;
  long http_queue_max = 0, http_deadline_ms = 0;
  long claim_idle_ms = config.redis.claim_idle.count();
  long grace_ms = config.shutdown_grace.count();
  std::string http_token_file;
  std::string prune_every = "0";
  retention_flags retention;
  po::options_description desc{
      "voucherd worker: the claim daemon. Takes messages ({\"user_id\": ..., \"campaign\": ..., "
      "\"message_id\": ...}) from a queue, claims a voucher for each, records one outcome per message.\n"
      "Logs: one JSON object per line on stderr. SIGTERM/SIGINT/SIGHUP: finish in-flight work, exit 0"};
  add_common(desc, url_flag);
  desc.add_options()
      ("source", po::value(&source)->default_value("pg"),
       "stdin (JSON lines in, outcome lines out, in order), pg (the message_queue table), "
       "redis (a stream and consumer group)")
      ("strategy", po::value(&config.strategy)->default_value(worker_config::k_strategy),
       "how to claim: skip-locked (the lock-based comparison strategies run under `voucherd bench`)")
      ("campaign", po::value(&config.campaign),
       "campaign for messages that name none (env VOUCHERD_CAMPAIGN)")
      ("concurrency", po::value(&concurrency),
       fmt::format("concurrent claimers = database connections, 1..{} (env VOUCHERD_CONCURRENCY; default {})",
                   worker_config::k_max_concurrency, worker_config::k_default_concurrency).c_str())
      ("threads", po::value(&threads),
       fmt::format("pg source: threads the claimers are spread over, 0..{}; 0 = one per CPU, at most one per "
                   "claimer (env VOUCHERD_THREADS; default 0). Other sources run on one thread",
                   worker_config::k_max_threads).c_str())
      ("batch", po::value(&batch),
       fmt::format("messages claimed per transaction (claim_batch), 1..{} (env VOUCHERD_BATCH; default {})",
                   worker_config::k_max_batch, worker_config::k_default_batch).c_str())
      ("pg-general-path", po::bool_switch(&general_path),
       "pg source: run every message through the general path (take, claim, record: three round trips) "
       "instead of claiming plain messages ({\"user_id\": ...} with an optional campaign) in one statement")
      ("http", po::value(&config.http_listen),
       "serve POST /v1/claims, /healthz, /readyz, /metrics on ADDR:PORT; off when absent. An address other "
       "than loopback needs --http-token-file")
      ("http-queue-max", po::value(&http_queue_max),
       fmt::format("POST /v1/claims: requests waiting unclaimed, at most; one more is answered 503 with "
                   "Retry-After (env VOUCHERD_HTTP_QUEUE_MAX; default {}). Without --batch, the HTTP claimers "
                   "take up to {} waiting requests per transaction (group commit)",
                   http_source_limits::k_default_queue_max, http_source_limits::k_default_batch).c_str())
      ("http-deadline-ms", po::value(&http_deadline_ms),
       fmt::format("POST /v1/claims: a request still unclaimed this long after it arrived is answered 503 with "
                   "Retry-After and never claimed (env VOUCHERD_HTTP_DEADLINE_MS; default {})",
                   http_source_limits::k_default_deadline.count()).c_str())
      ("http-claimers", po::value(&http_claimers),
       fmt::format("POST /v1/claims: claimers taking its requests, 1..--concurrency (env VOUCHERD_HTTP_CLAIMERS; "
                   "default {} under group commit, --concurrency at --batch 1). Fewer claimers make bigger groups "
                   "and fewer commits", http_source_limits::k_default_group_claimers).c_str())
      ("http-token-file", po::value(&http_token_file),
       "POST /v1/claims then requires \"Authorization: Bearer TOKEN\", TOKEN the file's first line (16+ "
       "characters); /healthz, /readyz, /metrics stay open (env VOUCHERD_HTTP_TOKEN_FILE, or the token itself "
       "in VOUCHERD_HTTP_TOKEN)")
      ("http-tls-cert", po::value(&config.http_tls.cert_file),
       "serve HTTPS with this PEM certificate chain; needs --http-tls-key (env VOUCHERD_HTTP_TLS_CERT)")
      ("http-tls-key", po::value(&config.http_tls.key_file),
       "the PEM private key of --http-tls-cert (env VOUCHERD_HTTP_TLS_KEY)")
      ("notify", po::value(&config.notify),
       "deliver notifications from the outbox: log | webhook:URL | redis (env VOUCHERD_NOTIFY); off when absent. "
       "An https:// webhook's certificate is verified against the system trust store")
      ("webhook-ca-file", po::value(&config.webhook_ca_file),
       "https webhooks: also trust the PEM CA certificates in this file (env VOUCHERD_WEBHOOK_CA_FILE)")
      ("redis-url", po::value(&config.redis.url),
       fmt::format("Redis for --source redis and --notify redis (env VOUCHERD_REDIS_URL; default {})",
                   redis_source_config::k_default_url).c_str())
      ("stream", po::value(&config.redis.stream)->default_value(redis_source_config::k_default_stream),
       "redis: the message stream")
      ("group", po::value(&config.redis.group)->default_value(redis_source_config::k_default_group),
       "redis: the consumer group (created at 0 when missing)")
      ("consumer", po::value(&config.redis.consumer), "redis: this worker's consumer name (default HOSTNAME-PID)")
      ("dead-letter-stream", po::value(&config.redis.dead_letter_stream),
       "redis: where rejected and undeliverable messages go (default STREAM:dead)")
      ("claim-idle-ms", po::value(&claim_idle_ms)->default_value(claim_idle_ms),
       "redis: take over (XAUTOCLAIM) messages pending this long on another consumer")
      ("max-deliveries", po::value(&config.max_deliveries)->default_value(config.max_deliveries),
       "every source: a message whose claim fails with an error no retry can fix is tried alone (its batch "
       "commits without it) and, after this many failed tries, rejected with the database's error and "
       "dead-lettered; redis also dead-letters an entry handed out more often than this")
      ("shutdown-grace-ms", po::value(&grace_ms)->default_value(grace_ms),
       "on SIGTERM, how long in-flight transactions may take before they are abandoned (rolled back)")
      ("prune-every", po::value(&prune_every)->default_value(prune_every),
       "run `voucherd prune` with the --keep-* options below on this period (e.g. 1h); 0 = never. "
       "Defaults: --keep-sent 7d --keep-done 7d --keep-outcomes 30d --keep-dead-letters 30d (also the "
       "retentions of /metrics' voucherd_prunable_rows)");
  add_retention_options(desc, retention);
  po::variables_map vm;
  if (!parse(a, "voucherd worker --source stdin|pg|redis [--campaign NAME] [--concurrency N] [--threads T] [--batch B] "
                "[--http ADDR:PORT [--http-token-file F] [--http-tls-cert F --http-tls-key F]] "
                "[--notify log|webhook:URL|redis] [--redis-url URL]",
             desc, {}, vm))
    return k_exit_ok;

  const auto common = resolve_common(url_flag, "worker");
  config.database_url = common.database_url;
  config.notify_listen_url = common.db.listen_conninfo();
  config.prune_every = parse_age(prune_every, "--prune-every");
  config.retention = resolve_retention(retention);
  config.deadlines = pg_deadlines::of(common.db);
  config.pooling = transaction_pooling::of(common.db);
  config.source = parse_source(source);
  if (config.campaign.empty()) config.campaign = env_or(k_env_campaign, "");
  config.concurrency = vm.count("concurrency") ? concurrency : env_int(k_env_concurrency, config.concurrency);
  config.threads = vm.count("threads") ? threads : env_int(k_env_threads, 0);
  const long b = vm.count("batch") ? batch : env_number(k_env_batch, static_cast<long>(config.batch));
  if (b < 1) throw voucherd_error{failure_kind::usage, fmt::format("--batch must be 1..{}, got {}", worker_config::k_max_batch, b)};
  config.batch = static_cast<std::size_t>(b);
  config.pg_one_statement = !general_path;
  // HTTP claimers group-commit by default; a --batch given (or its
  // environment) holds for them too.
  if (vm.count("batch") || !env_or(k_env_batch, "").empty()) config.http.batch = config.batch;
  const long queue_max = vm.count("http-queue-max")
                             ? http_queue_max
                             : env_number(k_env_http_queue_max, static_cast<long>(config.http.queue_max));
  if (queue_max < 1)
    throw voucherd_error{failure_kind::usage, fmt::format("--http-queue-max must be at least 1, got {}", queue_max)};
  config.http.queue_max = static_cast<std::size_t>(queue_max);
  // Given (flag or environment), it is validated as given: 0 is refused, not taken for the default.
  if (vm.count("http-claimers") || !env_or(k_env_http_claimers, "").empty()) {
    config.http.claimers = vm.count("http-claimers") ? http_claimers : env_int(k_env_http_claimers, 0);
  }
  config.http.deadline = std::chrono::milliseconds{
      vm.count("http-deadline-ms") ? http_deadline_ms : env_number(k_env_http_deadline_ms, config.http.deadline.count())};
  if (!vm.count("redis-url")) config.redis.url = env_or(k_env_redis_url, config.redis.url);
  config.notify_redis_url = config.redis.url;
  if (config.notify.empty()) config.notify = env_or(k_env_notify, "");
  if (config.webhook_ca_file.empty()) config.webhook_ca_file = env_or(k_env_webhook_ca_file, "");
  if (config.http_tls.cert_file.empty()) config.http_tls.cert_file = env_or(k_env_http_tls_cert, "");
  if (config.http_tls.key_file.empty()) config.http_tls.key_file = env_or(k_env_http_tls_key, "");
  read_http_token(http_token_file, config);
  if (config.redis.consumer.empty()) config.redis.consumer = default_consumer();
  config.redis.claim_idle = std::chrono::milliseconds{claim_idle_ms};
  config.shutdown_grace = std::chrono::milliseconds{grace_ms};
  config.validate();

  metrics registry;
  worker w{config, make_source(config), registry};
  return w.run();
}

}  // namespace voucherd::cli
