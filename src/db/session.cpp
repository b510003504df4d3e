#include "db/session.hpp"

#include <regex>

#include <fmt/format.h>

#include "common/failure.hpp"
#include "db/libpq_support.hpp"
#include "sql_catalog.hpp"

namespace voucherd {

db_session::db_session(const std::string& url, const transaction_pooling& pooling) : conninfo_{url} {
  try {
    conn_ = std::make_unique<pqxx::connection>(url);
  } catch (const pqxx::broken_connection& e) {
    const std::string why = trimmed(e.what());
    throw voucherd_error{classify_connect_failure(why), fmt::format("cannot connect to the database: {}", why)};
  }
  if (pooling.enabled) return;
  for (const sql_statement* s : sql::all()) conn_->prepare(s->name_str(), s->text_str());
}

std::string redact_url(const std::string& url) {
  static const std::regex k_uri_password{R"(^(\w+://[^:/@]*:)[^@]*@)"};
  static const std::regex k_kv_password{R"((password\s*=\s*)('[^']*'|\S+))"};
  std::string out = std::regex_replace(url, k_uri_password, "$1***@");
  return std::regex_replace(out, k_kv_password, "$1***");
}

}  // namespace voucherd
