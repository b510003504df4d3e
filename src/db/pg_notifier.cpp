#include "db/pg_notifier.hpp"

#include <poll.h>

#include <fmt/format.h>

#include "common/failure.hpp"
#include "db/libpq_support.hpp"

namespace voucherd {

struct pg_notifier::state {
  pg_conn_ptr conn;
  bool broken = false;
};

pg_notifier::pg_notifier(const std::string& conninfo, pg_deadlines deadlines)
    : state_{std::make_unique<state>()}, deadlines_{deadlines} {
  state_->conn = connect_blocking(conninfo, "cannot connect to the database");
}

pg_notifier::~pg_notifier() = default;

void pg_notifier::run(const sql_statement& statement) {
  auto lost = [&](const std::string& why) {
    state_->broken = true;
    return voucherd_error{failure_kind::transient, fmt::format("{}: {}", statement.name, why)};
  };
  if (state_->broken || PQstatus(state_->conn.get()) != CONNECTION_OK) throw lost("the connection was lost");
  if (!PQsendQuery(state_->conn.get(), statement.text_str().c_str())) throw lost(trimmed(PQerrorMessage(state_->conn.get())));
  const auto deadline = std::chrono::steady_clock::now() + deadlines_.reply;
  std::string error, sqlstate;
  for (;;) {
    while (PQisBusy(state_->conn.get())) {
      int wait_ms = -1;
      if (deadlines_.reply.count() > 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) throw lost(fmt::format("no reply within {} ms", deadlines_.reply.count()));
        wait_ms = static_cast<int>(left.count());
      }
      pollfd fd{PQsocket(state_->conn.get()), POLLIN, 0};
      if (::poll(&fd, 1, wait_ms) < 0) continue;  // EINTR
      if (!PQconsumeInput(state_->conn.get())) throw lost(trimmed(PQerrorMessage(state_->conn.get())));
    }
    PGresult* r = PQgetResult(state_->conn.get());
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
