#pragma once
// A connection that now and then runs one parameterless statement and waits
// for its end, every wait bounded (SPEC I8): the outbox bell's NOTIFY. A
// backend that stops answering (SIGSTOP, a wedged server, a half-open
// network) costs at most deadlines.reply, after which the connection is
// dropped (the server ends it once it notices), never a thread stuck for
// ever.
#include <chrono>
#include <memory>
#include <string>

#include "db/connection_settings.hpp"
#include "db/sql_statement.hpp"

namespace voucherd {

class pg_notifier {
 public:
  // Connects (bounded by the conninfo's connect_timeout). Throws voucherd_error.
  pg_notifier(const std::string& conninfo, pg_deadlines deadlines);
  ~pg_notifier();
  pg_notifier(const pg_notifier&) = delete;
  pg_notifier& operator=(const pg_notifier&) = delete;

  // Runs the statement (simple query protocol, so through a transaction
  // pooler too). Throws voucherd_error: transient when the connection is
  // lost or the reply did not come within deadlines.reply (the connection
  // is then unusable: open a new pg_notifier), else by SQLSTATE.
  void run(const sql_statement& statement);

 private:
  struct state;
  std::unique_ptr<state> state_;
  pg_deadlines deadlines_;
};

}  // namespace voucherd
