#include "db/schema_check.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/failure.hpp"
#include "db/migration_file.hpp"
#include "db/pg_connection.hpp"
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

boost::asio::awaitable<void> require_schema(pg_connection& conn) {
  std::vector<std::string> applied;
  try {
    const auto rows = co_await conn.exec(sql::migration_applied);
    for (int r = 0; r < rows.size(); ++r) applied.emplace_back(rows.text(r, 0));
  } catch (const pg_error& e) {
    if (e.sqlstate() != "42P01") throw;  // voucherd_migration missing: nothing was migrated
  }
  std::vector<std::string> known;
  for (const auto& f : embedded_migrations()) known.push_back(f.name);
  if (auto problem = schema_problem(applied, known); !problem.empty())
    throw voucherd_error{failure_kind::config, problem};
}

}  // namespace voucherd
