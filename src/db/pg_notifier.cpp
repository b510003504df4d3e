#include "db/pg_notifier.hpp"

#include <poll.h>

#include <libpq-fe.h>

#include <fmt/format.h>

#include "common/failure.hpp"

namespace voucherd {

namespace {

std::string last_error(PGconn* conn) {
  std::string why = PQerrorMessage(conn);
  while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
  return why;
}

}  // namespace

struct pg_notifier::state {
  PGconn* conn = nullptr;
  bool broken = false;
  ~state() {
    if (conn) PQfinish(conn);
  }
};

pg_notifier::pg_notifier(const std::string& conninfo, pg_deadlines deadlines)
    : state_{std::make_unique<state>()}, deadlines_{deadlines} {
  state_->conn = PQconnectdb(conninfo.c_str());
  if (PQstatus(state_->conn) != CONNECTION_OK) {
    const auto why = last_error(state_->conn);
    throw voucherd_error{classify_connect_failure(why), fmt::format("cannot connect to the database: {}", why)};
  }
}

pg_notifier::~pg_notifier() = default;

void pg_notifier::run(const sql_statement& statement) {
  auto lost = [&](const std::string& why) {
    state_->broken = true;
    return voucherd_error{failure_kind::transient, fmt::format("{}: {}", statement.name, why)};
  };
  if (state_->broken || PQstatus(state_->conn) != CONNECTION_OK) throw lost("the connection was lost");
  if (!PQsendQuery(state_->conn, statement.text_str().c_str())) throw lost(last_error(state_->conn));
  const auto deadline = std::chrono::steady_clock::now() + deadlines_.reply;
  std::string error, sqlstate;
  for (;;) {
    while (PQisBusy(state_->conn)) {
      int wait_ms = -1;
      if (deadlines_.reply.count() > 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) throw lost(fmt::format("no reply within {} ms", deadlines_.reply.count()));
        wait_ms = static_cast<int>(left.count());
      }
      pollfd fd{PQsocket(state_->conn), POLLIN, 0};
      if (::poll(&fd, 1, wait_ms) < 0) continue;  // EINTR
      if (!PQconsumeInput(state_->conn)) throw lost(last_error(state_->conn));
    }
    PGresult* r = PQgetResult(state_->conn);
    if (!r) break;
    if (PQresultStatus(r) == PGRES_FATAL_ERROR && error.empty()) {
      error = PQresultErrorMessage(r);
      const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      sqlstate = s ? s : "";
    }
    PQclear(r);
  }
  if (!error.empty()) {
    while (!error.empty() && (error.back() == '\n' || error.back() == ' ')) error.pop_back();
    throw voucherd_error{sqlstate.empty() ? failure_kind::transient : classify_sqlstate(sqlstate),
                         fmt::format("{}: {}", statement.name, error)};
  }
}

}  // namespace voucherd
