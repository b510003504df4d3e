#include "claim/claim_engine.hpp"

#include <pqxx/except>

#include <fmt/format.h>

#include "common/failure.hpp"
#include "sql_catalog.hpp"

namespace voucherd {

namespace {

constexpr const char* k_unknown_campaign = "unknown campaign";
constexpr const char* k_inactive_campaign = "campaign is not active (outside its start/end window)";
constexpr const char* k_sold_out = "no free voucher left";

// A retry helps for these: a racing duplicate delivery of the same user
// (voucher_item_owner_key), a serialization failure, a deadlock.
bool worth_retrying(const pqxx::sql_error& e) {
  const auto& s = e.sqlstate();
  return s == "23505" || s == "40001" || s == "40P01";
}

template <typename Body>
auto with_retries(Body&& body, int max_attempts = k_max_claim_attempts) -> decltype(body()) {
  for (int attempt = 1;; ++attempt) {
    try {
      return body();
    } catch (const pqxx::sql_error& e) {
      if (!worth_retrying(e)) throw;
      if (attempt >= max_attempts)
        throw voucherd_error{failure_kind::transient,
                             fmt::format("claim retried {} times: {}", attempt, e.what())};
    }
  }
}

}  // namespace

claim_outcome outcome_from_row(const claim_request& r, std::string_view status,
                               std::optional<std::int64_t> voucher_id, std::string_view code) {
  claim_outcome o;
  o.campaign = r.campaign;
  o.user_id = r.user_id;
  o.message_id = r.message_id;
  if (status == "inactive") {
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

namespace {

claim_outcome outcome_from(const claim_request& r, const std::string& status,
                           const pqxx::field& voucher_id, const pqxx::field& code) {
  const bool owns = status == "claimed" || status == "already_claimed";
  return outcome_from_row(r, status, owns ? std::optional{voucher_id.as<std::int64_t>()} : std::nullopt,
                          owns ? code.as<std::string>() : std::string{});
}

}  // namespace

claim_outcome claim_engine::claim(const claim_request& r) {
  if (auto problem = request_problem(r)) return rejected_outcome(r.campaign, r.user_id, *problem, r.message_id);
  auto res = with_retries([&] {
    pqxx::work txn{db_.conn()};
    auto rows = exec(txn, sql::claim_one, r.campaign, r.user_id, r.message_id);
    txn.commit();
    return rows;
  });
  if (res.empty()) return unknown_campaign_outcome(r);
  const auto row = res[0];
  const auto status = row["status"].as<std::string>();
  auto outcome = outcome_from(r, status, row["voucher_id"], row["code"]);
  after_claim(row["campaign_id"].as<std::int64_t>(), row["free_from"].as<std::int64_t>(),
              outcome.status == claim_status::claimed ? *outcome.voucher_id : 0,
              outcome.status == claim_status::sold_out);
  return outcome;
}

std::vector<claim_outcome> claim_engine::claim_batch(std::span<const claim_request> requests) {
  std::vector<claim_outcome> out(requests.size());
  if (requests.empty()) return out;
  if (requests.size() > k_max_batch)
    throw voucherd_error{failure_kind::usage, fmt::format("a batch holds at most {} claims", k_max_batch)};
  const std::string& campaign = requests.front().campaign;

  // Invalid requests are answered here; only valid ones reach the statement.
  std::vector<std::size_t> valid;
  std::string users, messages;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    if (r.campaign != campaign)
      throw voucherd_error{failure_kind::usage, "all claims of a batch must name one campaign"};
    if (auto problem = request_problem(r)) {
      out[i] = rejected_outcome(r.campaign, r.user_id, *problem, r.message_id);
      continue;
    }
    if (!valid.empty()) { users += '\n'; messages += '\n'; }
    users += r.user_id;
    messages += r.message_id;
    valid.push_back(i);
  }
  if (valid.empty()) return out;

  pqxx::result res;
  try {
    res = with_retries(
        [&] {
          pqxx::work txn{db_.conn()};
          auto rows = exec(txn, sql::claim_batch, campaign, users, messages);
          txn.commit();
          return rows;
        },
        k_max_batch_attempts);
  } catch (const voucherd_error& e) {
    if (e.kind() != failure_kind::transient) throw;
    // Users of this batch keep being claimed elsewhere at the same moment
    // (each attempt aborts on voucher_item_owner_key): claim them one by one,
    // each with its own retries, so the batch still converges.
    for (auto i : valid) out[i] = claim(requests[i]);
    return out;
  }
  if (res.empty()) {
    for (auto i : valid) {
      const auto& r = requests[i];
      out[i] = unknown_campaign_outcome(r);
    }
    return out;
  }
  if (res.size() != valid.size())
    throw voucherd_error{failure_kind::internal,
                         fmt::format("claim_batch returned {} rows for {} users", res.size(), valid.size())};
  std::int64_t highest = 0;
  bool sold_out = false;
  for (std::size_t k = 0; k < valid.size(); ++k) {
    const auto row = res[static_cast<pqxx::result::size_type>(k)];
    const auto& r = requests[valid[k]];
    out[valid[k]] = outcome_from(r, row["status"].as<std::string>(), row["voucher_id"], row["code"]);
    const auto& o = out[valid[k]];
    if (o.status == claim_status::claimed) highest = std::max(highest, *o.voucher_id);
    sold_out = sold_out || o.status == claim_status::sold_out;
  }
  after_claim(res[0]["campaign_id"].as<std::int64_t>(), res[0]["free_from"].as<std::int64_t>(),
              highest, sold_out);
  return out;
}

bool free_mark_policy::should_advance(std::int64_t campaign_id, std::int64_t free_from,
                                      std::int64_t highest_claimed, bool saw_sold_out) {
  bool advance = highest_claimed - free_from > k_free_mark_gap;
  if (saw_sold_out) {
    // A sold-out claim walked from the mark to the end of the pool; move the
    // mark past it, but at most once a second per campaign.
    auto now = std::chrono::steady_clock::now();
    const std::lock_guard lock{mutex_};
    auto& last = last_sold_out_advance_[campaign_id];
    if (now - last > std::chrono::seconds{1}) {
      last = now;
      advance = true;
    }
  }
  return advance;
}

void claim_engine::after_claim(std::int64_t campaign_id, std::int64_t free_from,
                               std::int64_t highest_claimed, bool saw_sold_out) {
  if (!free_mark_.should_advance(campaign_id, free_from, highest_claimed, saw_sold_out)) return;
  try {
    advance_free_mark(db_.conn(), campaign_id);
  } catch (const std::exception&) {
    // The mark is an optimisation and the claim has committed either way; a
    // lost connection shows up on the next claim.
  }
}

bool advance_free_mark(pqxx::connection& conn, std::int64_t campaign_id) {
  pqxx::work txn{conn};
  if (exec(txn, sql::lock_campaign_nowait, campaign_id).empty()) return false;
  exec(txn, sql::advance_free_mark, campaign_id);
  txn.commit();
  return true;
}

}  // namespace voucherd
