#include "notify/outbox_dispatcher.hpp"
#include "db/classify.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <random>

#include <poll.h>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>
#include <fmt/format.h>

#include "common/failure.hpp"
#include "db/pg_listener.hpp"
#include "db/session.hpp"
#include "common/json_log.hpp"
#include "notify/log_sink.hpp"
#include "notify/notification_sink.hpp"
#include "sql_catalog.hpp"

namespace voucherd {

namespace {

constexpr std::chrono::milliseconds k_reconnect_initial{100};
constexpr std::chrono::milliseconds k_reconnect_cap{10'000};
// Added to a batch's worst-case delivery time to make its lease.
constexpr std::chrono::milliseconds k_lease_margin{30'000};


double uniform(double low, double high) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>{low, high}(rng);
}

// min(cap, base * 2^(n-1)), +- jitter; n = attempts made so far (>= 1).
std::chrono::milliseconds backoff(const notify_config& c, int attempts_made) {
  const double exponent = std::min(attempts_made - 1, 40);
  const double plain = std::min(static_cast<double>(c.backoff_cap.count()),
                                static_cast<double>(c.backoff_base.count()) * std::pow(2.0, exponent));
  const double jittered = plain * uniform(1.0 - c.jitter, 1.0 + c.jitter);
  return std::chrono::milliseconds{std::llround(std::max(0.0, jittered))};
}

std::chrono::milliseconds jittered(std::chrono::milliseconds d) {
  return std::chrono::milliseconds{std::llround(static_cast<double>(d.count()) * uniform(0.5, 1.0))};
}

}  // namespace

struct outbox_dispatcher::connection {
  connection(const std::string& url, const transaction_pooling& pooling) : session{url, pooling} {}
  db_session session;
};

outbox_dispatcher::outbox_dispatcher(std::string database_url, notify_config config, metrics& registry,
                                     transaction_pooling pooling)
    : database_url_{std::move(database_url)}, pooling_{std::move(pooling)}, config_{std::move(config)}, metrics_{registry} {
  config_.validate();
  sink_ = make_sink(config_);
}

outbox_dispatcher::~outbox_dispatcher() { stop(); }

void outbox_dispatcher::start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread{[this] { run(); }};
}

void outbox_dispatcher::stop() {
  stopping_ = true;
  wake_.signal();
  if (thread_.joinable()) thread_.join();
}

void outbox_dispatcher::wake() noexcept {
  if (!wake_pending_.exchange(true)) wake_.signal();
}

std::size_t outbox_dispatcher::drain_once() { return pass(nullptr).attempts; }

void outbox_dispatcher::idle(std::chrono::milliseconds longest) {
  if (stopping_) return;
  if (!listener_ && !config_.listen_url.empty() && std::chrono::steady_clock::now() >= listener_retry_at_) {
    // Opened before the pass that follows this wait, so that nothing
    // notified after that pass began is missed.
    try {
      listener_ = std::make_unique<pg_listener>(config_.listen_url, sql::outbox_listen);
      listener_retry_delay_ = std::chrono::milliseconds{0};
      return;  // pass again: rows may have come while no one listened
    } catch (const std::exception& e) {
      listener_retry_delay_ = std::min(std::max(listener_retry_delay_ * 2, k_reconnect_initial), k_reconnect_cap);
      listener_retry_at_ = std::chrono::steady_clock::now() + jittered(listener_retry_delay_);
      log_json(log_level::warn, fmt::format("outbox dispatcher: cannot LISTEN, polling every {} ms meanwhile: {}",
                                            config_.poll_interval.count(), e.what()));
    }
  }
  if (listener_) {
    try {
      listener_->wait(wake_, std::min(longest, config_.listen_poll_interval));
    } catch (const std::exception& e) {
      listener_.reset();
      log_json(log_level::warn, fmt::format("outbox dispatcher: the LISTEN connection failed, reopening it: {}", e.what()));
    }
  } else {
    pollfd fd{wake_.fd(), POLLIN, 0};
    if (::poll(&fd, 1, static_cast<int>(std::min(longest, config_.poll_interval).count())) > 0) wake_.consume();
  }
  wake_pending_ = false;
}

void outbox_dispatcher::run() {
  auto reconnect_delay = k_reconnect_initial;
  while (!stopping_) {
    pass_result done;
    try {
      wake_pending_ = false;
      done = pass(&stopping_);
      reconnect_delay = k_reconnect_initial;
    } catch (const std::exception& e) {
      // Whatever failed, the next pass starts on a fresh connection. A row
      // delivered but not yet marked is delivered again after its lease.
      db_.reset();
      log_json(log_level::warn, fmt::format("outbox dispatcher: {} failure, retrying in about {} ms: {}",
                              to_string(classify(e)), reconnect_delay.count(), e.what()));
      pollfd fd{wake_.fd(), POLLIN, 0};
      ::poll(&fd, 1, static_cast<int>(jittered(reconnect_delay).count()));  // stop() ends it early
      reconnect_delay = std::min(reconnect_delay * 2, k_reconnect_cap);
      continue;
    }
    if (done.attempts > 0) continue;
    // Retries fall due without anyone notifying: wake for the earliest.
    const auto longest = std::max(std::chrono::milliseconds{10},
                                  done.next_due.value_or(config_.listen_poll_interval));
    idle(longest);
  }
}

outbox_dispatcher::pass_result outbox_dispatcher::pass(const std::atomic<bool>* stop_requested) {
  if (!db_ || !db_->session.is_open()) {
    db_.reset();
    db_ = std::make_unique<connection>(database_url_, pooling_);
  }
  auto& conn = db_->session.conn();
  const auto lease = sink_->worst_case() * static_cast<long>(config_.batch_size) + k_lease_margin;
  auto stopping = [&] { return stop_requested && stop_requested->load(); };

  std::size_t attempts = 0;
  std::optional<std::string> pass_started;  // the database's clock; set by the first take
  while (!stopping()) {
    std::vector<notification> batch;
    {
      pqxx::work txn{conn};
      for (const auto& row : exec(txn, sql::outbox_take, static_cast<std::int64_t>(config_.batch_size),
                                  static_cast<std::int64_t>(lease.count()), pass_started)) {
        notification n;
        n.id = row["id"].as<std::int64_t>();
        n.idempotency_key = row["idempotency_key"].as<std::string>();
        n.campaign = row["campaign"].as<std::string>();
        n.voucher_id = row["voucher_id"].as<std::int64_t>();
        n.user_id = row["user_id"].as<std::string>();
        n.code = row["code"].as<std::string>();
        n.attempts = row["attempts"].as<int>();
        pass_started = row["pass_started"].as<std::string>();
        batch.push_back(std::move(n));
      }
      txn.commit();
    }
    if (batch.empty()) break;
    std::sort(batch.begin(), batch.end(), [](const auto& a, const auto& b) { return a.id < b.id; });

    for (std::size_t i = 0; i < batch.size(); ++i) {
      const notification& n = batch[i];
      if (stopping()) {
        // Hand the untried rest back instead of letting it wait out the lease.
        pqxx::work txn{conn};
        for (std::size_t j = i; j < batch.size(); ++j) exec(txn, sql::outbox_release, batch[j].id, batch[j].attempts);
        txn.commit();
        break;
      }
      const auto error = sink_->deliver(n);
      ++attempts;
      metrics_.add_notification(!error);
      pqxx::work txn{conn};
      if (!error) {
        exec(txn, sql::outbox_mark_sent, n.id, n.attempts);
      } else {
        const auto delay = backoff(config_, n.attempts + 1);
        const auto marked = exec(txn, sql::outbox_mark_retry, n.id, n.attempts, *error,
                                 static_cast<std::int64_t>(delay.count()), config_.max_attempts);
        if (!marked.empty() && marked[0][0].as<std::string>() == "failed")
          log_json(log_level::warn, fmt::format("notification {} for user {} failed after {} attempts: {}", n.idempotency_key,
                                  n.user_id, n.attempts + 1, *error));
      }
      txn.commit();
    }
  }
  pass_result result;
  result.attempts = attempts;
  pqxx::work txn{conn};
  const auto backlog = exec(txn, sql::outbox_pending_count)[0];
  txn.commit();
  metrics_.set_outbox_pending(backlog["pending"].as<std::int64_t>());
  metrics_.set_outbox_oldest_pending(backlog["oldest_age_s"].as<double>());
  if (!backlog["next_due_ms"].is_null())
    result.next_due = std::chrono::milliseconds{std::max<std::int64_t>(0, backlog["next_due_ms"].as<std::int64_t>())};
  return result;
}

}  // namespace voucherd
