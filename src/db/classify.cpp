#include "db/classify.hpp"

#include <pqxx/except>

namespace voucherd {

failure_kind classify(const std::exception& e) {
  if (auto* own = dynamic_cast<const voucherd_error*>(&e)) return own->kind();
  if (dynamic_cast<const pqxx::broken_connection*>(&e)) return failure_kind::transient;
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e)) return failure_kind::transient;
  if (dynamic_cast<const pqxx::transaction_rollback*>(&e)) return failure_kind::transient;
  if (auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) return classify_sqlstate(sql->sqlstate());
  return failure_kind::internal;
}

}  // namespace voucherd
