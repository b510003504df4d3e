#pragma once
// One database connection with every statement of sql/ prepared under its
// stable name; behind a transaction pooler (transaction_pooling::enabled) with
// none, each statement then running unnamed (db/connection_settings.hpp). Connection settings come from a URL, or, when it is empty, from
// libpq's own PG* environment variables (PGPASSWORD, PGPASSFILE, ...), so a
// password never has to appear on a command line or in a log.
#include <memory>
#include <string>

#include <pqxx/connection>
#include <pqxx/transaction>

#include "db/connection_settings.hpp"
#include "db/sql_statement.hpp"

namespace voucherd {

class db_session {
 public:
  // Throws voucherd_error(transient) when the server cannot be reached.
  explicit db_session(const std::string& url, const transaction_pooling& pooling = {});

  pqxx::connection& conn() { return *conn_; }
  // The connection string it was opened with (for opening another like it).
  const std::string& conninfo() const { return conninfo_; }
  bool is_open() const { return conn_ && conn_->is_open(); }

 private:
  std::string conninfo_;
  std::unique_ptr<pqxx::connection> conn_;
};

// The URL with any password replaced by "***", for messages and logs.
std::string redact_url(const std::string& url);

// Executes a catalog statement by its prepared name, or, on a connection
// that prepared none (a db_session behind a pooler), unnamed from its text.
template <typename... Args>
pqxx::result exec(pqxx::transaction_base& txn, const sql_statement& statement, Args&&... args) {
  if (!txn.prepared(statement.name_str()).exists())
    return txn.exec_params(statement.text_str(), std::forward<Args>(args)...);
  return txn.exec_prepared(statement.name_str(), std::forward<Args>(args)...);
}

}  // namespace voucherd
