#include "worker/claim_loop.hpp"

#include <algorithm>
#include <random>
#include <utility>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include "common/json_log.hpp"
#include "sql_catalog.hpp"

namespace voucherd {

namespace {

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t{co_await asio::this_coro::executor, d};
  co_await t.async_wait(asio::use_awaitable);
}

}  // namespace

claim_loop::claim_loop(const worker_config& config, metrics& registry, const std::atomic<bool>& stopping)
    : config_{config}, registry_{registry}, stopping_{stopping}, seed_{std::random_device{}()} {}

asio::awaitable<claim_loop::transaction_result> claim_loop::finish_transaction(pg_connection& conn, message_source& src,
                                                                    std::vector<delivery>& batch,
                                                                    clock_type::time_point started) {
  std::vector<claim_outcome> outcomes(batch.size());
  // The messages that parse go to the claim core; the others are answered here.
  std::vector<claim_request> requests;
  std::vector<std::size_t> claimed_index;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].poison) {
      outcomes[i] = rejected_outcome({}, {}, *batch[i].poison);
      continue;
    }
    auto parsed = parse_message(batch[i].body, batch[i].oversized, config_.campaign, src.name());
    if (auto* rejected = std::get_if<claim_outcome>(&parsed)) {
      outcomes[i] = std::move(*rejected);
      continue;
    }
    auto request = std::get<claim_request>(std::move(parsed));
    src.key_outcome(batch[i], request);
    requests.push_back(std::move(request));
    claimed_index.push_back(i);
  }
  claim_progress progress;
  transaction_result result;
  bool in_transaction = true;
  // What failed after part of the batch committed (partly_committed): those
  // deliveries are acknowledged, the rest is handled as the failed batch.
  std::vector<delivery> settled;
  std::vector<claim_outcome> settled_outcomes;
  try {
    // A source that records nothing lets the claim commit (one round trip).
    const bool claims_only = !src.records_in_database();
    auto claimed = co_await core_.claim(conn, requests, src.messages_per_transaction(config_.batch) > 1, progress,
                                        claims_only);
    for (std::size_t k = 0; k < claimed.size(); ++k) outcomes[claimed_index[k]] = std::move(claimed[k]);
    if (!claims_only) {
      co_await src.record(conn, batch, outcomes);
      co_await conn.exec_simple(sql::worker_commit);
    }
    in_transaction = false;
  } catch (const partly_committed& e) {
    for (std::size_t k = 0; k < e.outcomes.size(); ++k) outcomes[claimed_index[k]] = e.outcomes[k];
    std::vector<bool> unsettled(batch.size(), false);
    for (auto k : e.unsettled) unsettled[claimed_index[k]] = true;
    std::vector<delivery> rest;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (unsettled[i]) {
        rest.push_back(std::move(batch[i]));
      } else {
        settled.push_back(std::move(batch[i]));
        settled_outcomes.push_back(std::move(outcomes[i]));
      }
    }
    batch = std::move(rest);
    result = failed_with(e.failure, conn);
  } catch (const std::exception&) {
    result = failed_with(std::current_exception(), conn);
  }
  if (result.how != ending::committed) {
    if (in_transaction && conn.is_open()) {
      try {
        co_await conn.rollback();
      } catch (const std::exception&) {
        conn.close();
      }
    }
    // Not counted in commits_: the rest failed in this claimer's own
    // transaction, so its timeout says nothing of the database's speed.
    if (!settled.empty()) co_await acknowledge(conn, src, settled, settled_outcomes, started, progress);
    co_return result;
  }
  ++commits_;
  co_await acknowledge(conn, src, batch, outcomes, started, progress);
  co_return result;
}

claim_loop::transaction_result claim_loop::failed_with(std::exception_ptr failure, pg_connection& conn) {
  transaction_result result;
  try {
    std::rethrow_exception(failure);
  } catch (const pg_error& e) {
    result.error = e.what();
    if (e.worth_retrying()) result.how = ending::retry_at_once;
    else if (e.lost_connection()) result.how = ending::unavailable;
    else if (is_timeout(e.sqlstate())) result.how = ending::timed_out;
    else if (refuses_message(e.sqlstate(), e.constraint())) result.how = ending::refused;
    else result.how = ending::unavailable;
    if (e.lost_connection()) conn.close();
  } catch (const std::exception& e) {
    result.error = e.what();
    result.how = ending::unavailable;
  }
  return result;
}

asio::awaitable<void> claim_loop::acknowledge(pg_connection& conn, message_source& src, std::vector<delivery>& batch,
                                              const std::vector<claim_outcome>& outcomes,
                                              clock_type::time_point started, const claim_progress& progress) {
  // Committed: only now may the source acknowledge.
  const double seconds = std::chrono::duration<double>(clock_type::now() - started).count();
  double lag = 0;
  bool notified = false;  // a claim wrote a notification
  for (std::size_t i = 0; i < batch.size(); ++i) {
    registry_.record_claim(outcomes[i].status, seconds);
    if (batch[i].dead_lettered || outcomes[i].dead_lettered) registry_.add_dead_letter();
    lag = std::max(lag, batch[i].lag_seconds);
    notified = notified || outcomes[i].status == claim_status::claimed;
  }
  if (notified && bell_) bell_->ring();
  registry_.set_queue_lag(lag);
  src.committed(batch, outcomes);
  if (!conn.is_open()) co_return;
  try {
    co_await core_.advance_marks(conn, progress);
  } catch (const std::exception&) {
    conn.close();  // the claims committed; the next loop reconnects
  }
}

void claim_loop::account(const one_statement_claims& one, clock_type::duration took) {
  if (one.finished.empty()) return;
  ++commits_;
  const double seconds = std::chrono::duration<double>(took).count();
  bool notified = false;
  for (const auto status : one.finished) {
    registry_.record_claim(status, seconds);
    notified = notified || status == claim_status::claimed;
  }
  if (notified && bell_) bell_->ring();
  registry_.set_queue_lag(one.max_lag_seconds);
}

void claim_loop::give_back(message_source& src, delivery d, bool unavailable) {
  std::vector<delivery> one;
  one.push_back(std::move(d));
  src.abandoned(std::move(one), unavailable);
}

void claim_loop::give_back(message_source& src, std::vector<delivery>& batch, std::size_t from) {
  if (from >= batch.size()) return;
  std::vector<delivery> rest(std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(from)),
                             std::make_move_iterator(batch.end()));
  src.abandoned(std::move(rest), true);
}

asio::awaitable<claim_loop::transaction_result> claim_loop::try_alone(pg_connection& conn, message_source& src, delivery& d) {
  std::vector<delivery> alone;
  std::optional<transaction_result> failed;
  try {
    conn.defer_simple(sql::worker_begin);
    const auto started = clock_type::now();
    std::vector<delivery> one{d};
    alone = co_await src.retake(conn, std::move(one));
    if (alone.empty()) {
      co_await conn.rollback();  // done or taken by another claimer meanwhile
      co_return transaction_result{};
    }
    alone.front().attempts = d.attempts;
    alone.front().last_error = d.last_error;
    auto result = co_await finish_transaction(conn, src, alone, started);
    co_return result;
  } catch (const std::exception& e) {
    failed = transaction_result{ending::unavailable, e.what()};
  }
  conn.close();  // the state of the transaction is unknown: start afresh
  co_return *failed;
}

asio::awaitable<std::chrono::milliseconds> claim_loop::blame(pg_connection& conn, message_source& src, delivery d,
                                                               const std::string& error, bool counted,
                                                               backoff& retry) {
  int attempts = 0;
  try {
    attempts = co_await src.note_attempt(conn, d, counted ? 0 : 1, error);
  } catch (const std::exception& e) {
    conn.close();
    give_back(src, std::move(d), true);
    co_return retry.next();
  }
  if (attempts == 0) co_return std::chrono::milliseconds{0};  // no longer ours
  if (attempts >= config_.max_deliveries) {
    co_await give_up(conn, src, std::move(d));
    co_return std::chrono::milliseconds{0};
  }
  log_json(log_level::warn, "a message failed alone; it will be tried alone again",
           {{"message_id", d.id}, {"attempts", attempts}, {"max_deliveries", config_.max_deliveries},
            {"error", error}});
  give_back(src, std::move(d), false);
  co_return retry.next();
}

asio::awaitable<std::chrono::milliseconds> claim_loop::split(pg_connection& conn, message_source& src,
                                                               std::vector<delivery> batch, backoff& retry) {
  const auto commits_before = commits_.load();
  std::vector<std::pair<delivery, std::string>> timed_out;
  std::chrono::milliseconds pause{0};
  for (std::size_t k = 0; k < batch.size(); ++k) {
    if (!conn.is_open()) {
      give_back(src, batch, k);
      co_return retry.next();
    }
    auto result = co_await try_alone(conn, src, batch[k]);
    switch (result.how) {
      case ending::committed: break;
      case ending::retry_at_once: give_back(src, std::move(batch[k]), false); break;
      case ending::unavailable:
        // Not this message: the database. The rest waits for it too.
        give_back(src, batch, k);
        for (auto& [d, e] : timed_out) {
          give_back(src, std::move(d), true);
        }
        co_return retry.next();
      case ending::refused:
        pause = std::max(pause, co_await blame(conn, src, std::move(batch[k]), result.error, false, retry));
        break;
      case ending::timed_out: timed_out.emplace_back(std::move(batch[k]), result.error); break;
    }
  }
  // A timeout is the message's own when others committed meanwhile (its
  // neighbours alone, or other claimers); otherwise the database is slow.
  const bool others_committed = commits_.load() > commits_before;
  for (auto& [d, e] : timed_out) {
    if (others_committed) {
      pause = std::max(pause, co_await blame(conn, src, std::move(d), e, false, retry));
    } else {
      give_back(src, std::move(d), true);
      pause = std::max(pause, retry.next());
    }
  }
  co_return pause;
}

asio::awaitable<std::chrono::milliseconds> claim_loop::try_suspects(pg_connection& conn, message_source& src,
                                                                      std::vector<delivery> suspects,
                                                                      backoff& retry) {
  std::chrono::milliseconds pause{0};
  for (std::size_t k = 0; k < suspects.size(); ++k) {
    auto& d = suspects[k];
    if (!conn.is_open()) {
      give_back(src, suspects, k);
      co_return retry.next();
    }
    int attempts = 0;
    try {
      // Counted before the try, where the count survives a crash on it.
      attempts = co_await src.note_attempt(conn, d, 1, std::nullopt);
    } catch (const std::exception&) {
      conn.close();
      give_back(src, suspects, k);
      co_return retry.next();
    }
    if (attempts == 0) continue;  // done, or another claimer holds it
    if (attempts > config_.max_deliveries) {
      // Counted before a try that never came back (the worker died on it).
      co_await give_up(conn, src, std::move(d));
      continue;
    }
    auto result = co_await try_alone(conn, src, d);
    switch (result.how) {
      case ending::committed: break;
      case ending::retry_at_once: give_back(src, std::move(d), false); break;
      case ending::unavailable:
        give_back(src, suspects, k);
        co_return retry.next();
      case ending::refused:
      case ending::timed_out:
        pause = std::max(pause, co_await blame(conn, src, std::move(d), result.error, true, retry));
        break;
    }
  }
  co_return pause;
}

asio::awaitable<void> claim_loop::give_up(pg_connection& conn, message_source& src, delivery d) {
  // Rejected with the database's error, like any bad message.
  claim_request who;
  auto parsed = parse_message(d.body, d.oversized, config_.campaign, src.name());
  if (auto* r = std::get_if<claim_request>(&parsed)) {
    who = std::move(*r);
    src.key_outcome(d, who);
  }
  const auto reason = fmt::format("claim failed {} times: {}", d.attempts,
                                  d.last_error.empty() ? "no error was recorded" : d.last_error);
  log_json(log_level::error, "a message failed every try; rejected and dead-lettered",
           {{"message_id", d.id}, {"attempts", d.attempts}, {"error", d.last_error}});
  std::vector<claim_outcome> outcomes;
  outcomes.push_back(rejected_outcome(who.campaign, who.user_id, reason, who.message_id));
  std::vector<delivery> again;
  bool failed = false;
  try {
    conn.defer_simple(sql::worker_begin);
    std::vector<delivery> one{std::move(d)};
    again = co_await src.retake(conn, std::move(one));
    if (again.empty()) {
      co_await conn.rollback();
      co_return;
    }
    co_await src.record(conn, again, outcomes);
    co_await conn.exec_simple(sql::worker_commit);
  } catch (const std::exception& e) {
    log_json(log_level::warn, "could not record a rejected message; it stays pending", {{"error", e.what()}});
    failed = true;
  }
  if (failed) {
    conn.close();  // state unknown; the claimer reconnects
    src.abandoned(std::move(again), true);
    co_return;
  }
  for (std::size_t i = 0; i < again.size(); ++i) {
    registry_.record_claim(outcomes[i].status, 0.0);
    if (again[i].dead_lettered) registry_.add_dead_letter();
  }
  src.committed(again, outcomes);
}

asio::awaitable<void> claim_loop::run(asio::io_context& ctx, message_source& src, int index) {
  pg_connection conn{ctx, config_.database_url, config_.deadlines, config_.pooling};
  backoff retry{seed_ + static_cast<std::uint64_t>(index)};
  std::mt19937_64 rng{seed_ ^ static_cast<std::uint64_t>(index * 7919)};
  const auto claimer_name = fmt::format("{}-{}", src.name(), index);
  // The source's one-statement path (take_and_claim), while it has one and
  // the general path is not owed a turn: messages it left, or a failure.
  bool one_statement = config_.pg_one_statement, general_next = false;
  std::vector<delivery> left;
  std::int64_t one_statement_failures = 0;
  // On stop, a claimer finishes what the source already read into memory,
  // unless it has no database to finish it with.
  while (!(stopping_ && (src.drained() || !conn.is_open())) && !src.finished()) {
    if (!conn.is_open()) {
      std::optional<std::chrono::milliseconds> wait;
      try {
        co_await conn.connect();
        co_await src.on_connect(conn);
        if (retry.attempts() > 0) log_json(log_level::info, "database connection restored", {{"claimer", claimer_name}});
        retry.reset();
      } catch (const std::exception& e) {
        wait = retry.next();
        src.database_unavailable();
        if (retry.attempts() == 1 || retry.attempts() % 20 == 0)
          log_json(log_level::warn, "cannot connect to the database; retrying",
                   {{"claimer", claimer_name}, {"error", e.what()}, {"retry_in_ms", wait->count()}, {"attempt", retry.attempts()}});
        conn.close();
      }
      if (wait) {
        co_await sleep_for(*wait);
        continue;
      }
    }
    if (one_statement && left.empty() && !general_next) {
      std::optional<one_statement_claims> one;
      const auto started = clock_type::now();
      try {
        one = co_await src.take_and_claim(conn, src.messages_per_transaction(config_.batch), config_.campaign);
      } catch (const std::exception& e) {
        // It changed nothing. The general path runs these messages next,
        // with its own answer to whatever failed (retry, split, back off),
        // until one of its transactions commits. Logged at the 1st, 2nd,
        // 4th, 8th... failure of this claimer: a concurrent claim of the
        // same user fails it now and then by design.
        const auto n = ++one_statement_failures;
        if ((n & (n - 1)) == 0) {
          log_json(log_level::info, "one-statement claim failed; the general path takes its messages",
                   {{"claimer", claimer_name}, {"error", e.what()}, {"failures", n}});
        }
        general_next = true;
        continue;
      }
      if (!one) {
        one_statement = false;  // the source has no such path
      } else {
        account(*one, clock_type::now() - started);
        try {
          co_await core_.advance_marks(conn, one->progress);
        } catch (const std::exception&) {
          conn.close();  // the claims committed; the next loop reconnects
        }
        if (one->finished.empty() && one->left.empty()) {
          if (stopping_ || src.finished()) break;
          // A connection lost while idle (its own, or behind a pooler the
          // LISTEN one) is reconnected at the top of the loop, as one lost
          // in a claim is; it must not end the worker.
          bool wait_failed = false;
          try {
            co_await src.wait_for_work(conn);
          } catch (const std::exception& e) {
            wait_failed = true;
            log_json(log_level::warn, "database connection lost while waiting for messages; reconnecting",
                     {{"claimer", claimer_name}, {"error", e.what()}});
          }
          if (wait_failed) conn.close();
        }
        left = std::move(one->left);
        continue;
      }
    }
    std::vector<delivery> batch, suspects;
    std::chrono::milliseconds pause{0};
    transaction_result result;
    const auto commits_before = commits_.load();
    try {
      // BEGIN goes out with the take (or, for sources that take from memory,
      // with the first claim): one round trip.
      conn.defer_simple(sql::worker_begin);
      const auto started = clock_type::now();
      const bool retaking = !left.empty();
      if (retaking) {
        // A named local, not a temporary in the co_await (GCC 12 destroys
        // those twice; see db/pg_connection.cpp).
        auto again = std::exchange(left, {});
        batch = co_await src.retake(conn, std::move(again));
      } else {
        batch = co_await src.take(conn, src.messages_per_transaction(config_.batch));
      }
      if (batch.empty()) {
        co_await conn.rollback();
        general_next = false;
        if (retaking) continue;  // done or taken by another claimer meanwhile
        if ((stopping_ && src.drained()) || src.finished()) break;
        co_await src.wait_for_work(conn);
        continue;
      }
      // A message that failed alone before is only ever tried alone again,
      // each try counted: it never fails a batch twice.
      const auto healthy_end = std::stable_partition(batch.begin(), batch.end(),
                                                     [](const delivery& d) { return d.attempts == 0; });
      suspects.assign(std::make_move_iterator(healthy_end), std::make_move_iterator(batch.end()));
      batch.erase(healthy_end, batch.end());
      if (batch.empty()) co_await conn.rollback();  // releases the suspects for try_suspects to take again
      else result = co_await finish_transaction(conn, src, batch, started);
    } catch (const std::exception& e) {
      // The take or the idle wait failed: nothing was claimed.
      result = {ending::unavailable, e.what()};
      conn.close();
    }
    if (result.how == ending::committed) general_next = false;
    try {
      switch (result.how) {
        case ending::committed: break;
        case ending::retry_at_once:
          if (batch.size() > 1) {
            // A batch can keep colliding with concurrent claims of one user or
            // another; alone, each message converges (already_claimed).
            pause = co_await split(conn, src, std::move(batch), retry);
            break;
          }
          src.abandoned(std::move(batch), false);
          pause = std::chrono::milliseconds{std::uniform_int_distribution<int>{0, 5}(rng)};
          break;
        case ending::unavailable:
          pause = retry.next();
          log_json(log_level::warn, conn.is_open() ? "claim transaction failed; messages given back"
                                                   : "database connection lost; messages given back",
                   {{"claimer", claimer_name}, {"error", result.error}, {"messages", batch.size()},
                    {"retry_in_ms", pause.count()}});
          src.abandoned(std::move(batch), true);
          break;
        case ending::timed_out:
        case ending::refused:
          if (batch.size() > 1) {
            log_json(log_level::warn, "claim transaction failed; trying its messages one by one",
                     {{"claimer", claimer_name}, {"error", result.error}, {"messages", batch.size()}});
            pause = co_await split(conn, src, std::move(batch), retry);
          } else if (result.how == ending::refused || commits_.load() > commits_before) {
            // Alone already: refused, or timed out while other claims went through.
            pause = co_await blame(conn, src, std::move(batch.front()), result.error, false, retry);
          } else {
            pause = retry.next();  // timed out with nothing else getting through: the database is slow
            src.abandoned(std::move(batch), true);
          }
          break;
      }
      if (!suspects.empty()) {
        if (result.how == ending::unavailable) src.abandoned(std::move(suspects), true);
        else pause = std::max(pause, co_await try_suspects(conn, src, std::move(suspects), retry));
      }
    } catch (const std::exception& e) {
      // split, blame and try_suspects handle the database's failures
      // themselves; this is a bug. Log it and carry on with a fresh
      // connection rather than end the worker.
      log_json(log_level::error, "claimer failed while handling a failed transaction",
               {{"claimer", claimer_name}, {"error", e.what()}});
      conn.close();
      pause = retry.next();
    }
    if (pause.count() > 0) co_await sleep_for(pause);
  }
}

}  // namespace voucherd
