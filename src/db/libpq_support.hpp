#pragma once
// What the blocking libpq connections of src/db/ (pg_listener, pg_notifier)
// and the error paths of the others share: libpq's messages without their
// trailing newline, and a connection opened at once and owned.
#include <memory>
#include <string>
#include <string_view>

#include <libpq-fe.h>

#include <fmt/format.h>

#include "common/failure.hpp"

namespace voucherd {

// A libpq (or libpqxx) message as one line's worth: without the trailing
// newlines and blanks libpq ends it with.
inline std::string trimmed(const char* text) {
  std::string s = text ? text : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

struct pg_conn_closer {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
using pg_conn_ptr = std::unique_ptr<PGconn, pg_conn_closer>;

// Opens a connection and waits for it (bounded by the conninfo's
// connect_timeout). Throws voucherd_error "<what>: <libpq's reason>", config
// or transient by classify_connect_failure.
inline pg_conn_ptr connect_blocking(const std::string& conninfo, std::string_view what) {
  pg_conn_ptr conn{PQconnectdb(conninfo.c_str())};
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    const auto why = conn ? trimmed(PQerrorMessage(conn.get())) : std::string{"out of memory"};
    throw voucherd_error{classify_connect_failure(why), fmt::format("{}: {}", what, why)};
  }
  return conn;
}

}  // namespace voucherd
