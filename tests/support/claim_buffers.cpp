#include "support/claim_buffers.hpp"

#include <vector>

#include <boost/json.hpp>

#include "db/fixed_limit.hpp"
#include "sql_catalog.hpp"

namespace voucherd::test {

long claim_buffers(pqxx::connection& conn, const std::string& campaign, const std::string& user,
                   std::string* plan_out) {
  const auto text = sql::claim_one.text_str();
  const int placeholders = highest_parameter(text);
  std::vector<std::string> params{campaign, user, ""};
  while (static_cast<int>(params.size()) < placeholders) params.push_back("false");
  params.resize(static_cast<std::size_t>(placeholders));
  return statement_buffers(conn, text, params, plan_out);
}

long statement_buffers(pqxx::connection& conn, const std::string& text, const std::vector<std::string>& params,
                       std::string* plan_out) {
  pqxx::work txn{conn};
  const auto plan_text =
      txn.exec_params("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + text, pqxx::prepare::make_dynamic_params(params))[0][0]
          .as<std::string>();
  txn.abort();
  if (plan_out) *plan_out = plan_text;
  const auto plan = boost::json::parse(plan_text).as_array()[0].as_object().at("Plan").as_object();
  return static_cast<long>(plan.at("Shared Hit Blocks").to_number<double>() +
                           plan.at("Shared Read Blocks").to_number<double>());
}

}  // namespace voucherd::test
