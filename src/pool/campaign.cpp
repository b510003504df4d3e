#include "pool/campaign.hpp"

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "claim/claim_request.hpp"
#include "common/failure.hpp"
#include "db/session.hpp"
#include "sql_catalog.hpp"

namespace voucherd {

namespace {

void require_valid_name(const std::string& name) {
  if (auto problem = campaign_name_problem(name)) throw voucherd_error{failure_kind::rejected, *problem};
}

boost::json::value optional_text(const pqxx::field& f) {
  if (f.is_null()) return nullptr;
  return boost::json::value(f.as<std::string>());
}

}  // namespace

boost::json::object create_campaign(pqxx::connection& conn, const campaign_spec& spec) {
  require_valid_name(spec.name);
  try {
    pqxx::work txn{conn};
    auto row = exec(txn, sql::campaign_create, spec.name, spec.starts_at, spec.ends_at)[0];
    txn.commit();
    boost::json::object out;
    out["status"] = "created";
    out["campaign"] = spec.name;
    out["id"] = row["id"].as<std::int64_t>();
    out["starts_at"] = optional_text(row["starts_at"]);
    out["ends_at"] = optional_text(row["ends_at"]);
    return out;
  } catch (const pqxx::sql_error& e) {
    const auto& s = e.sqlstate();
    if (s == "23505")
      throw voucherd_error{failure_kind::rejected, fmt::format("campaign '{}' exists already", spec.name)};
    if (s == "23514")
      throw voucherd_error{failure_kind::rejected, "the campaign must start before it ends"};
    if (s.rfind("22", 0) == 0)
      throw voucherd_error{failure_kind::rejected,
                           fmt::format("bad --starts-at/--ends-at timestamp: {}", e.what())};
    throw;
  }
}

boost::json::object campaign_stats(pqxx::connection& conn, const std::string& name) {
  require_valid_name(name);
  pqxx::read_transaction txn{conn};
  auto rows = exec(txn, sql::campaign_stats, name);
  if (rows.empty()) throw voucherd_error{failure_kind::rejected, fmt::format("unknown campaign '{}'", name)};
  const auto row = rows[0];
  boost::json::object out;
  out["campaign"] = name;
  const auto total = row["total"].as<std::int64_t>();
  const auto claimed = row["claimed"].as<std::int64_t>();
  out["total"] = total;
  out["claimed"] = claimed;
  out["free"] = total - claimed;
  for (const char* k : {"outbox_pending", "outbox_sent", "outbox_failed", "queue_pending", "dead_letters"})
    out[k] = row[k].as<std::int64_t>();
  out["outbox_oldest_pending_s"] = row["outbox_oldest_pending_s"].as<double>();
  out["starts_at"] = optional_text(row["starts_at"]);
  out["ends_at"] = optional_text(row["ends_at"]);
  return out;
}

std::int64_t find_campaign(pqxx::transaction_base& txn, const std::string& name) {
  require_valid_name(name);
  auto rows = exec(txn, sql::campaign_find, name);
  if (rows.empty()) throw voucherd_error{failure_kind::rejected, fmt::format("unknown campaign '{}'", name)};
  return rows[0][0].as<std::int64_t>();
}

std::int64_t lock_campaign_for_import(pqxx::transaction_base& txn, const std::string& name) {
  require_valid_name(name);
  auto rows = exec(txn, sql::campaign_lock, name);
  if (rows.empty()) throw voucherd_error{failure_kind::rejected, fmt::format("unknown campaign '{}'", name)};
  return rows[0][0].as<std::int64_t>();
}

}  // namespace voucherd
