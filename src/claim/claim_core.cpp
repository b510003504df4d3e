#include "claim/claim_core.hpp"

#include <algorithm>

#include <boost/asio/co_spawn.hpp>
#include <fmt/format.h>

#include "common/failure.hpp"
#include "db/schema_check.hpp"
#include "sql_catalog.hpp"

namespace voucherd {

namespace {

constexpr const char* k_unknown_campaign = "unknown campaign";
constexpr const char* k_inactive_campaign = "campaign is not active (outside its start/end window)";
constexpr const char* k_sold_out = "no free voucher left";

std::string join_lines(std::span<const claim_request> requests, std::span<const std::size_t> members,
                       std::string claim_request::*field) {
  std::string out;
  for (std::size_t k = 0; k < members.size(); ++k) {
    if (k) out += '\n';
    const auto& r = requests[members[k]];
    // A source is checked (no control characters) only with a message id.
    if (field != &claim_request::source || !r.message_id.empty()) out += r.*field;
  }
  return out;
}

}  // namespace

claim_outcome outcome_from_row(const claim_request& r, std::string_view status,
                               std::optional<std::int64_t> voucher_id, std::string_view code,
                               std::string_view reason) {
  claim_outcome o;
  o.campaign = r.campaign;
  o.user_id = r.user_id;
  o.message_id = r.message_id;
  if (status == "reused") {
    // The message id is another user's or campaign's; the statement
    // dead-lettered this message (migration 0006).
    o.status = claim_status::rejected;
    o.reason = std::string{reason};
    o.dead_lettered = true;
  } else if (status == "inactive") {
    o.status = claim_status::rejected;
    o.reason = k_inactive_campaign;
  } else if (status == "sold_out") {
    o.status = claim_status::sold_out;
    o.reason = k_sold_out;
  } else {
    o.status = status == "claimed" ? claim_status::claimed : claim_status::already_claimed;
    o.voucher_id = voucher_id;
    o.code = std::string{code};
  }
  return o;
}

claim_outcome unknown_campaign_outcome(const claim_request& r) {
  return rejected_outcome(r.campaign, r.user_id, k_unknown_campaign, r.message_id);
}

bool free_mark_policy::should_advance(const campaign_progress& p) {
  const bool gap = p.highest_claimed - p.free_from > p.gap;
  if (!gap && !p.saw_sold_out) return false;
  const auto now = std::chrono::steady_clock::now();
  const std::lock_guard lock{mutex_};
  bool advance = false;
  if (gap) {
    // Once per mark value: the claimers that see the same mark leave it to
    // the first; a second later it may be tried again (that try may have met
    // an import holding the campaign row).
    auto& last = last_gap_try_[p.campaign_id];
    if (p.free_from > last.free_from || now - last.at > std::chrono::seconds{1}) {
      last = {std::max(last.free_from, p.free_from), now};
      advance = true;
    }
  }
  if (p.saw_sold_out) {
    // A sold-out claim walked from the mark to the end of the pool; move the
    // mark past it, but at most once a second per campaign.
    auto& last = last_sold_out_advance_[p.campaign_id];
    if (now - last > std::chrono::seconds{1}) {
      last = now;
      advance = true;
    }
  }
  return advance;
}

asio::awaitable<std::vector<claim_outcome>> claim_core::claim(pg_connection& conn,
                                                              std::span<const claim_request> requests, bool batched,
                                                              claim_progress& progress, bool commit) {
  std::vector<claim_outcome> out(requests.size());
  // Valid requests, grouped by campaign in order of first appearance.
  std::vector<std::pair<std::string, std::vector<std::size_t>>> groups;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    if (auto problem = request_problem(r)) {
      out[i] = rejected_outcome(r.campaign, r.user_id, *problem, r.message_id);
      continue;
    }
    auto g = std::find_if(groups.begin(), groups.end(), [&](const auto& x) { return x.first == r.campaign; });
    if (g == groups.end()) groups.push_back({r.campaign, {i}});
    else g->second.push_back(i);
  }
  if (commit && groups.empty()) co_await conn.rollback();  // nothing to claim: ends the deferred BEGIN
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const auto& [campaign, members] = groups[g];
    // With commit, the last campaign's statement ends the transaction.
    const bool last = commit && g + 1 == groups.size();
    std::vector<std::size_t> suspected;
    co_await claim_pass(conn, requests, members, batched, false, last, out, progress, suspected);
    if (suspected.empty()) continue;
    // Wait for the holders of the free vouchers SKIP LOCKED passed over, then
    // claim again: claim_wait_free goes out in the same round trip (behind a
    // new BEGIN when the first pass committed).
    if (last) conn.defer_simple(sql::worker_begin);
    std::vector<pg_param> wait_params{campaign, std::to_string(suspected.size())};
    conn.defer(sql::claim_wait_free, std::move(wait_params));
    std::vector<std::size_t> sold_out;
    std::exception_ptr failure;
    try {
      co_await claim_pass(conn, requests, suspected, batched, true, last, out, progress, sold_out);
    } catch (const std::exception&) {
      if (!last) throw;  // nothing committed yet
      failure = std::current_exception();
    }
    if (failure) throw partly_committed{std::move(out), std::move(suspected), failure};
  }
  co_return out;
}

asio::awaitable<void> claim_core::claim_pass(pg_connection& conn, std::span<const claim_request> requests,
                                             const std::vector<std::size_t>& members, bool batched, bool final,
                                             bool commit, std::vector<claim_outcome>& out, claim_progress& progress,
                                             std::vector<std::size_t>& sold_out) {
  const std::string final_text = final ? "true" : "false";
  auto note = [&](const pg_rows& rows, int row, std::size_t i) {
    const auto& o = out[i];
    auto& p = progress[requests[i].campaign];
    p.campaign_id = rows.int64(row, rows.column("campaign_id"));
    p.free_from = rows.int64(row, rows.column("free_from"));
    if (o.status == claim_status::claimed) p.highest_claimed = std::max(p.highest_claimed, *o.voucher_id);
    if (o.status == claim_status::sold_out) {
      p.saw_sold_out = true;
      sold_out.push_back(i);
    }
  };
  auto read = [&](const pg_rows& rows, int row, std::size_t i) {
    const int status = rows.column("status"), voucher = rows.column("voucher_id"), code = rows.column("code"),
              reason = rows.column("reason");
    out[i] = outcome_from_row(requests[i], rows.text(row, status), rows.opt_int64(row, voucher),
                              rows.is_null(row, code) ? "" : rows.text(row, code),
                              rows.is_null(row, reason) ? "" : rows.text(row, reason));
    note(rows, row, i);
  };
  // The pass's last statement, with COMMIT behind it when asked. Not a
  // conditional expression around two co_awaits: GCC 12 destroys the
  // temporaries of those twice.
  auto run = [&](const sql_statement& statement, std::vector<pg_param> params,
                 bool last) -> asio::awaitable<pg_rows> {
    if (commit && last) co_return co_await conn.exec_then(statement, std::move(params), sql::worker_commit);
    co_return co_await conn.exec(statement, std::move(params));
  };
  if (!batched || members.size() == 1) {
    for (std::size_t k = 0; k < members.size(); ++k) {
      const auto i = members[k];
      const auto& r = requests[i];
      // Named, not a braced temporary inside co_await: GCC 12 destroys those twice.
      std::vector<pg_param> params{r.campaign, r.user_id, r.message_id, final_text, r.source};
      auto rows = co_await run(sql::claim_one, std::move(params), k + 1 == members.size());
      if (rows.empty()) out[i] = unknown_campaign_outcome(r);
      else read(rows, 0, i);
    }
    co_return;
  }
  const std::span<const std::size_t> all{members};
  for (std::size_t start = 0; start < all.size(); start += k_max_statement_batch) {
    const auto chunk = all.subspan(start, std::min(k_max_statement_batch, all.size() - start));
    const auto& campaign = requests[chunk.front()].campaign;
    std::vector<pg_param> params{campaign, join_lines(requests, chunk, &claim_request::user_id),
                                 join_lines(requests, chunk, &claim_request::message_id), final_text,
                                 join_lines(requests, chunk, &claim_request::source)};
    auto rows = co_await run(sql::claim_batch, std::move(params), start + chunk.size() == all.size());
    if (rows.empty()) {
      for (auto i : chunk) out[i] = unknown_campaign_outcome(requests[i]);
      continue;
    }
    if (static_cast<std::size_t>(rows.size()) != chunk.size())
      throw voucherd_error{failure_kind::internal,
                           fmt::format("claim_batch returned {} rows for {} users", rows.size(), chunk.size())};
    for (std::size_t k = 0; k < chunk.size(); ++k) read(rows, static_cast<int>(k), chunk[k]);
  }
}

asio::awaitable<void> claim_core::advance_marks(pg_connection& conn, const claim_progress& progress) {
  for (const auto& [name, p] : progress) {
    if (!marks_.should_advance(p)) continue;
    // The mark is an optimisation and the claims have committed: a failure
    // here only ends this transaction; a lost connection is the caller's.
    bool failed = false;
    conn.defer_simple(sql::worker_begin);
    try {
      std::vector<pg_param> params{std::to_string(p.campaign_id)};
      const auto locked = co_await conn.exec(sql::lock_campaign_nowait, params);
      if (!locked.empty()) co_await conn.exec(sql::advance_free_mark, std::move(params));
      co_await conn.exec_simple(sql::worker_commit);
    } catch (const pg_error& e) {
      if (e.lost_connection()) throw;
      failed = true;
    }
    if (failed) co_await conn.rollback();
  }
}

blocking_claimer::blocking_claimer(std::string conninfo, pg_deadlines deadlines, transaction_pooling pooling)
    : conn_{io_, std::move(conninfo), deadlines, std::move(pooling)} {}

blocking_claimer::~blocking_claimer() = default;

namespace {

// Runs a coroutine on io to completion and returns its result or rethrows.
template <typename T>
T run_to_completion(asio::io_context& io, asio::awaitable<T> work) {
  std::optional<T> result;
  std::exception_ptr error;
  asio::co_spawn(io, std::move(work), [&](std::exception_ptr e, T value) {
    if (e) error = e;
    else result = std::move(value);
  });
  io.restart();
  io.run();
  if (error) std::rethrow_exception(error);
  return std::move(*result);
}

}  // namespace

std::optional<std::vector<claim_outcome>> blocking_claimer::transaction(std::span<const claim_request> requests,
                                                                        bool batched, std::string& last_error) {
  auto once = [&]() -> asio::awaitable<std::vector<claim_outcome>> {
    if (!conn_.is_open()) {
      co_await conn_.connect();
      co_await require_schema(conn_);  // as a command's libpqxx session does
    }
    claim_progress progress;
    std::vector<claim_outcome> outcomes;
    std::exception_ptr failure;
    conn_.defer_simple(sql::worker_begin);
    try {
      outcomes = co_await core_.claim(conn_, requests, batched, progress);
      co_await conn_.exec_simple(sql::worker_commit);
    } catch (...) {
      failure = std::current_exception();
    }
    if (failure) {
      if (conn_.is_open()) co_await conn_.rollback();
      std::rethrow_exception(failure);
    }
    // The claims have committed: the mark is an optimisation, and a
    // connection that dies after the COMMIT (closed here, or lost in the
    // mark's own transaction) must not turn them into an error (exit 75
    // with no outcome lines). The next call reconnects.
    bool mark_failed = false;
    if (conn_.is_open()) {
      try {
        co_await core_.advance_marks(conn_, progress);
      } catch (const std::exception&) {
        mark_failed = true;
      }
    }
    if (mark_failed) conn_.close();
    co_return outcomes;
  };
  for (int attempt = 1; attempt <= k_max_claim_attempts; ++attempt) {
    try {
      return run_to_completion(io_, once());
    } catch (const pg_error& e) {
      if (e.lost_connection()) conn_.close();  // the next call connects afresh
      if (!e.worth_retrying()) throw;
      last_error = e.what();
    }
  }
  return std::nullopt;
}

claim_outcome blocking_claimer::claim(const claim_request& request) {
  std::string last_error;
  auto outcomes = transaction(std::span{&request, 1}, false, last_error);
  if (!outcomes)
    throw voucherd_error{failure_kind::transient,
                         fmt::format("claim retried {} times: {}", k_max_claim_attempts, last_error)};
  return outcomes->front();
}

std::vector<claim_outcome> blocking_claimer::claim_batch(std::span<const claim_request> requests) {
  if (requests.empty()) return {};
  std::string last_error;
  if (auto outcomes = transaction(requests, true, last_error)) return std::move(*outcomes);
  // Users of this batch keep being claimed elsewhere at the same moment, a
  // different one each attempt. Alone, each converges (already_claimed).
  std::vector<claim_outcome> out;
  out.reserve(requests.size());
  for (const auto& r : requests) out.push_back(claim(r));
  return out;
}

}  // namespace voucherd
