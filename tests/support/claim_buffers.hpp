#pragma once
// SPEC section 8's drain trap, measured without a clock: how many buffers one
// claim reads, from the statement's own EXPLAIN (ANALYZE, BUFFERS).
#include <string>
#include <vector>

#include <pqxx/pqxx>

namespace voucherd::test {

// Buffers (shared hit + read) that one claim_one statement for `user` of
// `campaign` touches, from EXPLAIN (ANALYZE, BUFFERS) run inside a
// transaction that is rolled back (nothing is claimed). $1 campaign, $2
// user, $3 message id (''); any further placeholder the statement may have
// grown gets 'false'. The plan as JSON goes to `plan_out` when given.
long claim_buffers(pqxx::connection& conn, const std::string& campaign, const std::string& user,
                   std::string* plan_out = nullptr);

// The same for any statement `text` with these parameters.
long statement_buffers(pqxx::connection& conn, const std::string& text, const std::vector<std::string>& params,
                       std::string* plan_out = nullptr);

}  // namespace voucherd::test
