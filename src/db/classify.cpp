#include "db/classify.hpp"

#include <pqxx/except>

#include "db/pg_connection.hpp"

namespace voucherd {

failure_kind classify(const std::exception& e) {
  if (auto* own = dynamic_cast<const voucherd_error*>(&e)) return own->kind();
  if (dynamic_cast<const pqxx::broken_connection*>(&e)) return failure_kind::transient;
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e)) return failure_kind::transient;
  if (dynamic_cast<const pqxx::transaction_rollback*>(&e)) return failure_kind::transient;
  if (auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) return classify_sqlstate(sqlstate_of(*sql));
  return failure_kind::internal;
}

std::string sqlstate_of(const std::exception& e) {
  // libpqxx 6.4 throws insufficient_privilege without its SQLSTATE.
  if (dynamic_cast<const pqxx::insufficient_privilege*>(&e)) return "42501";
  if (auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) return sql->sqlstate();
  if (auto* pg = dynamic_cast<const pg_error*>(&e)) return pg->sqlstate();
  return {};
}

}  // namespace voucherd
