#pragma once
// Whether a database holds the schema this binary was built for: every
// migration embedded in the binary applied (db/migrator.hpp records them in
// voucherd_migration). A worker checks this once at start-up, and a command
// once it has connected, so that a database nobody migrated, or one an older
// voucherd migrated, stops it with exit 78 and "run `voucherd migrate`"
// instead of failing every message, or running on a schema it was not
// built for.
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <pqxx/connection>

namespace voucherd {

class pg_connection;

// What is wrong with a schema whose applied migrations are `applied`, for
// this binary's migrations `known`: "" when every known one is applied.
// Migrations applied but unknown here (a newer voucherd migrated) are not a
// problem: migrations only add, so an older binary still runs.
std::string schema_problem(const std::vector<std::string>& applied, const std::vector<std::string>& known);

// Reads the applied migrations over `conn` and throws voucherd_error(config)
// naming what is missing, with the hint to migrate. A database error is
// thrown as it came (pg_error; a missing voucherd_migration table is config).
boost::asio::awaitable<void> require_schema(pg_connection& conn);
// The same over a libpqxx session: what every one-shot command but
// `migrate` checks before its work.
void require_schema(pqxx::connection& conn);

}  // namespace voucherd
