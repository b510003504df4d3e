#include "db/schema_check.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <pqxx/pqxx>

#include "common/failure.hpp"
#include "db/migration_file.hpp"
#include "db/pg_connection.hpp"
#include "db/session.hpp"
#include "sql_catalog.hpp"

namespace voucherd {

std::string schema_problem(const std::vector<std::string>& applied, const std::vector<std::string>& known) {
  std::vector<std::string> missing;
  for (const auto& name : known)
    if (std::find(applied.begin(), applied.end(), name) == applied.end()) missing.push_back(name);
  if (missing.empty()) return {};
  if (applied.empty()) return "the database has no voucherd schema: run `voucherd migrate` as the schema owner";
  return fmt::format("the database's schema is older than this voucherd (not applied: {}): "
                     "run `voucherd migrate` as the schema owner",
                     fmt::join(missing, ", "));
}

namespace {

constexpr const char* k_undefined_table = "42P01";  // voucherd_migration missing: nothing was migrated

void throw_unless_current(const std::vector<std::string>& applied) {
  std::vector<std::string> known;
  for (const auto& f : embedded_migrations()) known.push_back(f.name);
  if (auto problem = schema_problem(applied, known); !problem.empty())
    throw voucherd_error{failure_kind::config, problem};
}

}  // namespace

boost::asio::awaitable<void> require_schema(pg_connection& conn) {
  std::vector<std::string> applied;
  try {
    const auto rows = co_await conn.exec(sql::migration_applied);
    for (int r = 0; r < rows.size(); ++r) applied.emplace_back(rows.text(r, 0));
  } catch (const pg_error& e) {
    if (e.sqlstate() != k_undefined_table) throw;
  }
  throw_unless_current(applied);
}

void require_schema(pqxx::connection& conn) {
  std::vector<std::string> applied;
  try {
    pqxx::nontransaction txn{conn};  // one round trip, no BEGIN
    for (const auto& row : exec(txn, sql::migration_applied)) applied.emplace_back(row[0].c_str());
  } catch (const pqxx::sql_error& e) {
    if (e.sqlstate() != k_undefined_table) throw;
  }
  throw_unless_current(applied);
}

}  // namespace voucherd
