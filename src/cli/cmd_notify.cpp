// notify: the outbox dispatcher on its own, for deployments that run it apart
// from the workers (or once, from cron or a test).
#include <pthread.h>
#include <signal.h>

#include <cstdlib>

#include <fmt/format.h>

#include "cli/commands.hpp"
#include "common/failure.hpp"
#include "claim/metrics.hpp"
#include "db/session.hpp"
#include "notify/outbox_dispatcher.hpp"
#include "pool/campaign.hpp"
#include "sql_catalog.hpp"

namespace voucherd::cli {

int run_notify(const args& a) {
  using ms = std::chrono::milliseconds;
  common_flags url_flag;
  std::string notify, redis_url, stream, requeue_campaign, webhook_ca_file;
  int max_attempts = 0;
  long backoff_ms = 0, backoff_cap_ms = 0, timeout_ms = 0, poll_ms = 0;
  std::size_t batch = 0;
  po::options_description desc{
      "voucherd notify: deliver the notification outbox through a sink. Each notification is marked sent "
      "only after the sink accepted it; a refused one is retried with capped exponential backoff and ends "
      "'failed' (see `voucherd stats`) after the last attempt. Delivery is at-least-once; every delivery "
      "carries the notification's idempotency key"};
  add_common(desc, url_flag);
  desc.add_options()
      ("notify", po::value(&notify)->default_value("log"),
       "sink: log (JSON lines on stderr), webhook:http[s]://HOST:PORT/PATH (POST with Idempotency-Key; an "
       "https receiver's certificate is verified against the system trust store), or redis (XADD to "
       "--redis-stream)")
      ("webhook-ca-file", po::value(&webhook_ca_file),
       "https webhooks: also trust the PEM CA certificates in this file (env VOUCHERD_WEBHOOK_CA_FILE)")
      ("redis-url", po::value(&redis_url)->default_value("redis://127.0.0.1:6379"), "Redis for --notify redis")
      ("redis-stream", po::value(&stream)->default_value(k_default_notify_stream), "stream for --notify redis")
      ("once", "one pass over what is due now, then exit (prints one JSON summary line)")
      ("requeue-failed", po::value(&requeue_campaign)->implicit_value(""),
       "first give every 'failed' notification (of campaign NAME, when given) a fresh set of attempts; "
       "prints {\"requeued\":N}")
      ("max-attempts", po::value(&max_attempts)->default_value(notify_config::k_default_max_attempts),
       "attempts before a notification ends 'failed'")
      ("backoff-ms", po::value(&backoff_ms)->default_value(notify_config::k_default_backoff_base.count()),
       "wait after the first failed attempt; doubles each attempt")
      ("backoff-cap-ms", po::value(&backoff_cap_ms)->default_value(notify_config::k_default_backoff_cap.count()),
       "longest wait between attempts")
      ("timeout-ms", po::value(&timeout_ms)->default_value(notify_config::k_default_webhook_timeout.count()),
       "per-delivery timeout of the webhook and redis sinks")
      ("poll-ms", po::value(&poll_ms),
       fmt::format("longest idle wait between passes: default {} ms when polling (through a transaction pooler "
                   "without --listen-url), {} ms when a LISTEN on voucherd_outbox wakes it (workers NOTIFY after "
                   "claims; a due retry wakes it too)",
                   notify_config::k_default_poll_interval.count(),
                   notify_config::k_default_listen_poll_interval.count()).c_str())
      ("batch", po::value(&batch)->default_value(notify_config::k_default_batch_size),
       "notifications leased per statement (1..1000)");
  po::variables_map vm;
  if (!parse(a, "voucherd notify [--notify log|webhook:URL|redis] [--redis-url URL] [--once] [--requeue-failed [NAME]]", desc, {}, vm))
    return k_exit_ok;
  auto config = parse_notify_option(notify, redis_url);
  config.redis_stream = stream;
  if (webhook_ca_file.empty())
    if (const char* env = std::getenv("VOUCHERD_WEBHOOK_CA_FILE")) webhook_ca_file = env;
  config.webhook_ca_file = webhook_ca_file;
  config.max_attempts = max_attempts;
  config.backoff_base = ms{backoff_ms};
  config.backoff_cap = ms{backoff_cap_ms};
  config.webhook_timeout = ms{timeout_ms};
  if (vm.count("poll-ms")) config.poll_interval = config.listen_poll_interval = ms{poll_ms};
  config.batch_size = batch;
  metrics registry;
  const auto common = resolve_common(url_flag, "notify");
  const auto& database_url = common.database_url;
  config.listen_url = common.db.listen_conninfo();
  config.validate();
  if (vm.count("requeue-failed")) {
    auto db = open_session(common);
    pqxx::work txn{db.conn()};
    // A misspelled name would requeue nothing and say {"requeued":0}.
    if (!requeue_campaign.empty()) find_campaign(txn, requeue_campaign);
    const auto requeued = exec(txn, sql::outbox_requeue_failed, requeue_campaign).size();
    txn.commit();
    boost::json::object line;
    line["requeued"] = requeued;
    print_json(line);
  }
  if (vm.count("once")) {
    outbox_dispatcher dispatcher{database_url, config, registry, common.pooling};
    const auto attempts = dispatcher.drain_once();
    boost::json::object summary;
    summary["attempts"] = attempts;
    summary["delivered"] = registry.notifications(true);
    summary["failed_attempts"] = registry.notifications(false);
    print_json(summary);
    return k_exit_ok;
  }
  // Block the stop signals in every thread (the dispatcher's inherits the
  // mask) and wait for one here.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);  // as the worker: a hang-up stops it gracefully
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  outbox_dispatcher dispatcher{database_url, config, registry, common.pooling};
  dispatcher.start();
  say(fmt::format("notify: delivering through {} until SIGINT/SIGTERM/SIGHUP", notify));
  int received = 0;
  sigwait(&stop_signals, &received);
  dispatcher.stop();
  say(fmt::format("notify: stopped; {} delivered, {} failed attempts", registry.notifications(true),
                  registry.notifications(false)));
  return k_exit_ok;
}

}  // namespace voucherd::cli
