#include "source/pg_queue_source.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <pqxx/transaction>

#include "db/fixed_limit.hpp"
#include "db/session.hpp"

#include "sql_catalog.hpp"

namespace voucherd {

std::vector<std::int64_t> enqueue_messages(pqxx::connection& conn, const std::vector<std::string>& bodies) {
  std::vector<std::int64_t> ids;
  ids.reserve(bodies.size());
  pqxx::work txn{conn};
  for (const auto& b : bodies) {
    const auto request = queued_request_of(b);
    std::optional<std::string> user, campaign;
    if (request) {
      user = request->user_id;
      campaign = request->campaign;
    }
    ids.push_back(exec(txn, sql::queue_enqueue, pqxx::binarystring{b}, user, campaign)[0][0].as<std::int64_t>());
  }
  exec(txn, sql::queue_notify);
  txn.commit();
  return ids;
}

std::string pg_array_literal(const std::vector<std::optional<std::string>>& elements) {
  std::string out = "{";
  for (std::size_t i = 0; i < elements.size(); ++i) {
    if (i) out += ',';
    if (!elements[i]) {
      out += "NULL";
      continue;
    }
    out += '"';
    for (char c : *elements[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

asio::awaitable<void> pg_queue_source::on_connect(pg_connection& conn) {
  co_await conn.listen(sql::queue_listen);
}

namespace {

// The rows of queue_take / queue_take_ids as deliveries.
std::vector<delivery> deliveries_of(const pg_rows& rows) {
  std::vector<delivery> out;
  out.reserve(static_cast<std::size_t>(rows.size()));
  const int id = rows.column("id"), body = rows.column("body"), lag = rows.column("lag_s"),
            attempts = rows.column("attempts");
  for (int r = 0; r < rows.size(); ++r) {
    delivery d;
    d.id = std::string{rows.text(r, id)};
    d.body = rows.bytes(r, body);
    if (d.body.size() > k_max_message_bytes) {
      d.oversized = true;
      d.body.resize(k_dead_letter_body_bytes);
    }
    d.lag_seconds = std::strtod(std::string{rows.text(r, lag)}.c_str(), nullptr);
    d.attempts = static_cast<int>(rows.int64(r, attempts));
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace

const sql_statement& queue_claim_statement(std::size_t max) {
  return max == 1 ? sql::queue_claim_one : with_fixed_limit(sql::queue_claim, max);
}

asio::awaitable<std::vector<delivery>> pg_queue_source::take(pg_connection& conn, std::size_t max) {
  co_return deliveries_of(co_await conn.exec(with_fixed_limit(sql::queue_take, max)));
}

asio::awaitable<std::optional<one_statement_claims>> pg_queue_source::take_and_claim(
    pg_connection& conn, std::size_t max, const std::string& default_campaign) {
  std::vector<pg_param> params{default_campaign};
  const auto rows = co_await conn.exec(queue_claim_statement(max), std::move(params));
  one_statement_claims out;
  const int id = rows.column("id"), lag = rows.column("lag_s"), status = rows.column("status"),
            voucher = rows.column("voucher_id"), campaign = rows.column("campaign_id"),
            free_from = rows.column("free_from");
  for (int r = 0; r < rows.size(); ++r) {
    out.max_lag_seconds = std::max(out.max_lag_seconds, std::strtod(std::string{rows.text(r, lag)}.c_str(), nullptr));
    if (rows.is_null(r, status)) {
      delivery d;
      d.id = std::string{rows.text(r, id)};
      out.left.push_back(std::move(d));
    } else {
      const auto s = claim_status_from(rows.text(r, status));
      if (!s) throw voucherd_error{failure_kind::internal, fmt::format("queue_claim answered status {}", rows.text(r, status))};
      out.finished.push_back(*s);
      auto& p = out.progress[std::string{rows.text(r, campaign)}];
      p.campaign_id = rows.int64(r, campaign);
      // Every claim starts at the mark, so each walks at most ten batches
      // of dead index entries past it (at --batch 100, about 17 buffers).
      // At 1 claimer and --batch 100 the gap of 256 cost one mark
      // transaction (three round trips and a commit) per three claim
      // statements.
      p.gap = std::max(k_free_mark_gap, 10 * static_cast<std::int64_t>(max));
      p.free_from = rows.int64(r, free_from);
      if (*s == claim_status::claimed) p.highest_claimed = std::max(p.highest_claimed, rows.int64(r, voucher));
    }
  }
  co_return out;
}

asio::awaitable<int> pg_queue_source::note_attempt(pg_connection& conn, delivery& d, int tries,
                                                   std::optional<std::string> error) {
  std::vector<pg_param> params{d.id, std::to_string(tries), std::move(error)};
  const auto rows = co_await conn.exec(sql::queue_note_attempt, std::move(params));
  if (rows.empty()) co_return 0;
  d.attempts = static_cast<int>(rows.int64(0, 0));
  if (!rows.is_null(0, 1)) d.last_error = std::string{rows.text(0, 1)};
  co_return d.attempts;
}

asio::awaitable<std::vector<delivery>> pg_queue_source::retake(pg_connection& conn, std::vector<delivery> batch) {
  std::vector<std::optional<std::string>> ids;
  for (const auto& d : batch) ids.emplace_back(d.id);
  std::vector<pg_param> params{pg_array_literal(ids)};
  co_return deliveries_of(co_await conn.exec(sql::queue_take_ids, std::move(params)));
}

asio::awaitable<void> pg_queue_source::wait_for_work(pg_connection& conn) {
  // A notification that arrived while the last take ran means new rows may
  // have committed after its snapshot: look again at once.
  if (conn.take_notifications()) co_return;
  co_await conn.wait_readable(k_idle_wait);
}

asio::awaitable<void> pg_queue_source::record(pg_connection& conn, std::vector<delivery>& batch,
                                              const std::vector<claim_outcome>& outcomes) {
  std::vector<std::optional<std::string>> ids, statuses, reasons, vouchers;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const auto& o = outcomes[i];
    ids.emplace_back(batch[i].id);
    statuses.emplace_back(to_string(o.status));
    reasons.push_back(o.reason.empty() ? std::nullopt : std::optional{o.reason});
    vouchers.push_back(o.voucher_id ? std::optional{std::to_string(*o.voucher_id)} : std::nullopt);
  }
  std::vector<pg_param> params{pg_array_literal(ids), pg_array_literal(statuses),
                                            pg_array_literal(reasons), pg_array_literal(vouchers)};
  // Deferred: they go out with the claimer's COMMIT, in one round trip.
  conn.defer(sql::queue_mark_done, std::move(params));
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (outcomes[i].status != claim_status::rejected || outcomes[i].dead_lettered) continue;
    std::vector<pg_param> params{std::string{"pg"}, batch[i].id, bytea_hex(batch[i].body), outcomes[i].reason};
    conn.defer(sql::worker_dead_letter, std::move(params));
    batch[i].dead_lettered = true;
  }
  co_return;
}

}  // namespace voucherd
