#pragma once
// A catalog statement whose last parameter is its LIMIT, with that parameter
// written in as a constant. A LIMIT given as a parameter is one the planner
// cannot see in a generic plan (it guesses 10% of the rows), so the generic
// plan looks dearer than the custom ones and Postgres plans such a statement
// anew at every execution: for sql/queue_claim.sql at --batch 1, 0.68 ms of
// planning per 0.48 ms of execution (pg_stat_statements, track_planning).
// A worker's batch is fixed for its life, so its statement can be too.
#include <cstddef>
#include <string_view>

#include "db/sql_statement.hpp"

namespace voucherd {

// The statement with its highest-numbered parameter, which must occur once,
// as `LIMIT $n`, replaced by `limit`; named "<name>/limit=<limit>". Made once
// per statement and limit and kept for the life of the process (prepared
// statement names refer to it). Throws std::logic_error for a statement not
// shaped so.
const sql_statement& with_fixed_limit(const sql_statement& statement, std::size_t limit);

// The highest $n a statement's text uses outside its -- comments (0 for
// none): how many parameters it takes.
int highest_parameter(std::string_view text);

}  // namespace voucherd
