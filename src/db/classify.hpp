#pragma once
// Any exception, libpqxx's included, as one of the failure kinds of
// common/failure.hpp: connection loss, serialization failures, deadlocks,
// server shutdown and "too many connections" are transient; SQLSTATEs map
// through classify_sqlstate; our own errors carry their kind; anything else
// is internal.
#include <exception>
#include <string>

#include "common/failure.hpp"

namespace voucherd {

failure_kind classify(const std::exception& e);
// The SQLSTATE a database error carries (libpqxx's or pg_connection's), ""
// for any other exception.
std::string sqlstate_of(const std::exception& e);

}  // namespace voucherd
