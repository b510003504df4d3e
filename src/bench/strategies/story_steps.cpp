#include "bench/strategies/story_steps.hpp"

#include <thread>

#include "sql_catalog.hpp"

namespace voucherd::story {

read_result read_first_free(db_session& db, const std::string& campaign) {
  pqxx::read_transaction txn{db.conn()};
  const auto rows = exec(txn, sql::race_read_first_free, campaign);
  txn.commit();
  read_result out;
  if (rows.empty()) return out;
  out.campaign_known = true;
  const auto row = rows[0];
  if (row["voucher_id"].is_null()) return out;
  out.voucher = free_voucher{row["campaign_id"].as<std::int64_t>(), row["voucher_id"].as<std::int64_t>(),
                             row["code"].as<std::string>()};
  return out;
}

void write_owner(db_session& db, const free_voucher& v, const std::string& user_id) {
  pqxx::work txn{db.conn()};
  exec(txn, sql::race_unguard);
  exec(txn, sql::race_write_owner, v.voucher_id, user_id);
  exec(txn, sql::race_notify, v.campaign_id, v.voucher_id, user_id, v.code);
  txn.commit();
}

void simulate_work(const strategy_options& options, std::mt19937_64& rng) {
  const auto lo = std::max<long>(0, options.work.count() - options.jitter.count());
  const auto hi = options.work.count() + options.jitter.count();
  if (hi <= 0) return;
  std::uniform_int_distribution<long> us(lo * 1000, hi * 1000);
  std::this_thread::sleep_for(std::chrono::microseconds{us(rng)});
}

claim_outcome claimed(const claim_request& r, const free_voucher& v) {
  claim_outcome o;
  o.status = claim_status::claimed;
  o.campaign = r.campaign;
  o.user_id = r.user_id;
  o.message_id = r.message_id;
  o.voucher_id = v.voucher_id;
  o.code = v.code;
  return o;
}

claim_outcome not_claimed(const claim_request& r, const read_result& read) {
  if (!read.campaign_known) return rejected_outcome(r.campaign, r.user_id, "unknown campaign", r.message_id);
  claim_outcome o;
  o.status = claim_status::sold_out;
  o.campaign = r.campaign;
  o.user_id = r.user_id;
  o.message_id = r.message_id;
  o.reason = "no free voucher left";
  return o;
}

}  // namespace voucherd::story
