#include "db/pg_listener.hpp"

#include <poll.h>

#include <fmt/format.h>

#include "common/failure.hpp"
#include "common/wake_event.hpp"
#include "db/libpq_support.hpp"

namespace voucherd {

struct pg_listener::state {
  pg_conn_ptr conn;
  // Reads what the socket holds; whether a notification was among it.
  bool drain() {
    if (!PQconsumeInput(conn.get()))
      throw voucherd_error{failure_kind::transient,
                           fmt::format("the listening connection was lost: {}", trimmed(PQerrorMessage(conn.get())))};
    bool any = false;
    while (PGnotify* n = PQnotifies(conn.get())) {
      any = true;
      PQfreemem(n);
    }
    return any;
  }
};

pg_listener::pg_listener(const std::string& conninfo, const sql_statement& listen) : state_{std::make_unique<state>()} {
  state_->conn = connect_blocking(conninfo, "cannot open the listening connection");
  PGresult* r = PQexec(state_->conn.get(), listen.text_str().c_str());
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  const char* sqlstate = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const auto kind = sqlstate ? classify_sqlstate(sqlstate) : failure_kind::transient;
  PQclear(r);
  if (!ok) throw voucherd_error{kind, fmt::format("{} failed: {}", listen.name, trimmed(PQerrorMessage(state_->conn.get())))};
}

pg_listener::~pg_listener() = default;

pg_listener::wake_reason pg_listener::wait(wake_event& wake, std::chrono::milliseconds timeout) {
  if (state_->drain()) return wake_reason::notified;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return wake_reason::timed_out;
    pollfd fds[2] = {{PQsocket(state_->conn.get()), POLLIN, 0}, {wake.fd(), POLLIN, 0}};
    const int ready = ::poll(fds, 2, static_cast<int>(std::min<long long>(left.count(), 60'000)));
    if (ready < 0) continue;  // EINTR: recompute what is left
    if (fds[1].revents & POLLIN) {
      wake.consume();
      return wake_reason::woken;
    }
    // Readable, or hung up / in error: drain() tells which (and throws on a lost connection).
    if (fds[0].revents && state_->drain()) return wake_reason::notified;
  }
}

}  // namespace voucherd
