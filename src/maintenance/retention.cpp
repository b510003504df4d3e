#include "maintenance/retention.hpp"

#include <optional>
#include <regex>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "common/failure.hpp"
#include "db/session.hpp"
#include "sql_catalog.hpp"

namespace voucherd {

namespace {

const sql_statement& prune_statement(retained_kind kind) {
  switch (kind) {
    case retained_kind::sent_notifications: return sql::prune_sent_notifications;
    case retained_kind::done_messages: return sql::prune_done_messages;
    case retained_kind::outcomes: return sql::prune_outcomes;
    case retained_kind::dead_letters: return sql::prune_dead_letters;
  }
  throw voucherd_error{failure_kind::internal, "unknown retained kind"};
}

std::size_t index_of(retained_kind kind) { return static_cast<std::size_t>(kind); }

}  // namespace

std::chrono::seconds retention_config::keep(retained_kind kind) const {
  switch (kind) {
    case retained_kind::sent_notifications: return keep_sent;
    case retained_kind::done_messages: return keep_done;
    case retained_kind::outcomes: return keep_outcomes;
    case retained_kind::dead_letters: return keep_dead_letters;
  }
  return keep_outcomes;
}

void retention_config::validate() const {
  auto fail = [](std::string message) { throw voucherd_error{failure_kind::usage, std::move(message)}; };
  for (auto [age, option] : {std::pair{keep_sent, "--keep-sent"}, std::pair{keep_done, "--keep-done"},
                             std::pair{keep_outcomes, "--keep-outcomes"},
                             std::pair{keep_dead_letters, "--keep-dead-letters"}}) {
    if (age.count() < 0) fail(fmt::format("{} must not be negative", option));
    if (age > k_max_keep) fail(fmt::format("{} must be at most {} (got {})", option, format_age(k_max_keep), format_age(age)));
  }
  if (keep_outcomes < k_min_keep_outcomes)
    fail(fmt::format("--keep-outcomes must be at least {}: an outcome must outlive every redelivery of its "
                     "message (got {})", format_age(k_min_keep_outcomes), format_age(keep_outcomes)));
  if (batch < 1 || batch > k_max_batch) fail(fmt::format("--prune-batch must be 1..{} (got {})", k_max_batch, batch));
}

std::chrono::seconds parse_age(const std::string& text, const std::string& option) {
  static const std::regex k_age{R"(([0-9]{1,9})([smhd]))"};
  if (text == "0") return std::chrono::seconds{0};
  std::smatch m;
  if (!std::regex_match(text, m, k_age))
    throw voucherd_error{failure_kind::usage,
                         fmt::format("{} '{}': expected a whole number and a unit, e.g. 90s, 30m, 12h or 7d", option, text)};
  const std::int64_t n = std::stoll(m[1].str());
  const char unit = m[2].str()[0];
  const std::int64_t factor = unit == 'd' ? 86400 : unit == 'h' ? 3600 : unit == 'm' ? 60 : 1;
  return std::chrono::seconds{n * factor};
}

std::string format_age(std::chrono::seconds age) {
  const auto s = age.count();
  if (s == 0) return "0";
  if (s % 86400 == 0) return fmt::format("{}d", s / 86400);
  if (s % 3600 == 0) return fmt::format("{}h", s / 3600);
  if (s % 60 == 0) return fmt::format("{}m", s / 60);
  return fmt::format("{}s", s);
}

struct retention_pruner::connection {
  connection(const std::string& url, const transaction_pooling& pooling) : session{url, pooling} {}
  db_session session;
};

retention_pruner::retention_pruner(std::string conninfo, retention_config config, transaction_pooling pooling)
    : conninfo_{std::move(conninfo)}, config_{config}, pooling_{std::move(pooling)} {
  config_.validate();
}

retention_pruner::~retention_pruner() = default;

retention_pruner::connection& retention_pruner::db() {
  if (!db_ || !db_->session.is_open()) {
    db_.reset();
    db_ = std::make_unique<connection>(conninfo_, pooling_);
  }
  return *db_;
}

std::array<std::uint64_t, std::size(k_retained_kinds)> retention_pruner::sweep(
    const std::function<void(const progress&)>& report, const std::atomic<bool>* stop) {
  std::array<std::uint64_t, std::size(k_retained_kinds)> deleted{};
  auto stopping = [stop] { return stop && stop->load(); };
  try {
    for (const auto kind : k_retained_kinds) {
      progress p{kind};
      std::optional<std::string> from;  // where the sweep of this kind is
      while (!stopping()) {
        auto& conn = db().session.conn();
        pqxx::work txn{conn};
        const auto row = exec(txn, prune_statement(kind), static_cast<std::int64_t>(config_.keep(kind).count()),
                              static_cast<std::int64_t>(config_.batch), from)[0];
        txn.commit();
        const auto n = row["deleted"].as<std::uint64_t>();
        ++p.batches;
        p.deleted += n;
        deleted[index_of(kind)] += n;
        if (n == 0) break;
        from = row["last"].as<std::string>();
        if (report) report(p);
      }
      p.done = true;
      if (report) report(p);
    }
  } catch (...) {
    db_.reset();
    throw;
  }
  return deleted;
}

backlog retention_pruner::read_backlog() {
  try {
    auto& conn = db().session.conn();
    pqxx::work txn{conn};
    const auto row = exec(txn, sql::retention_backlog, static_cast<std::int64_t>(config_.keep_sent.count()),
                          static_cast<std::int64_t>(config_.keep_done.count()),
                          static_cast<std::int64_t>(config_.keep_outcomes.count()),
                          static_cast<std::int64_t>(config_.keep_dead_letters.count()))[0];
    txn.commit();
    backlog b;
    b.outbox_pending = row["outbox_pending"].as<std::int64_t>();
    b.outbox_oldest_pending_s = row["outbox_oldest_pending_s"].as<double>();
    b.queue_pending = row["queue_pending"].as<std::int64_t>();
    for (const auto kind : k_retained_kinds)
      b.prunable[index_of(kind)] = row[fmt::format("prunable_{}", to_string(kind))].as<std::int64_t>();
    return b;
  } catch (...) {
    db_.reset();
    throw;
  }
}

}  // namespace voucherd
