#pragma once
// A connection that only LISTENs, for a thread that sleeps until a NOTIFY on
// its channel, a wake-up from its own process (common/wake_event), or a
// timeout, whichever comes first. Blocking by design: the outbox dispatcher
// runs on a thread of its own.
//
// Contract:
//  - the constructor connects and runs the LISTEN statement; it throws
//    voucherd_error (transient, or config for a set-up no retry fixes);
//  - wait() throws voucherd_error(transient) when the connection is lost;
//    the listener is then useless and the caller opens a new one (a NOTIFY
//    sent while none listened is gone: the caller makes a pass first);
//  - it needs a session of its own: through a transaction-pooling PgBouncer
//    LISTEN is lost with the server connection, so it takes a direct URL
//    (connection_settings::listen_conninfo()).
#include <chrono>
#include <memory>
#include <string>

#include "db/sql_statement.hpp"

namespace voucherd {

class wake_event;

class pg_listener {
 public:
  enum class wake_reason { notified, woken, timed_out };

  pg_listener(const std::string& conninfo, const sql_statement& listen);
  ~pg_listener();
  pg_listener(const pg_listener&) = delete;
  pg_listener& operator=(const pg_listener&) = delete;

  // Sleeps until a notification arrives (every one received so far is
  // consumed), `wake` is signalled (and consumed), or `timeout` passes.
  wake_reason wait(wake_event& wake, std::chrono::milliseconds timeout);

 private:
  struct state;
  std::unique_ptr<state> state_;
};

}  // namespace voucherd
