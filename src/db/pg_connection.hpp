#pragma once
// One asynchronous Postgres connection for the worker's claimers: libpq's
// non-blocking API (PQsendQueryPrepared / PQconsumeInput / PQgetResult) with
// the socket waited on by Boost.Asio, so N claimers share one io_context
// thread and no thread is ever blocked on the database.
//
// Contract:
//  - connect() opens the connection without blocking (PQconnectStart/Poll)
//    and prepares each catalog statement under its stable name on first use;
//  - exec() runs one catalog statement with text parameters and returns its
//    rows; a server error throws pg_error carrying the statement name, the
//    SQLSTATE and the failure kind; a lost connection throws pg_error with
//    kind transient and lost_connection() true, after which is_open() is
//    false and connect() must be called again;
//  - exec_simple() runs a parameterless catalog statement through the simple
//    query protocol (BEGIN, COMMIT, ROLLBACK, LISTEN);
//  - defer() queues a statement whose rows nobody reads (a mark-done
//    UPDATE), defer_simple() a parameterless one (BEGIN): it goes out with
//    the next exec()/exec_simple(), all in one round trip (libpq pipeline
//    mode), and its error is thrown there, naming it. A claimer's transaction thus costs three round trips, not five:
//    BEGIN+take, claim, mark-done+COMMIT; exec_then() sends a statement
//    with COMMIT behind it, for a transaction whose last statement it is;
//  - rollback() drops what is deferred and ends an open transaction; with
//    none open on the server (its BEGIN was never sent) it sends nothing;
//  - nothing waits forever: connect() gives up after deadlines.connect, and
//    every reply after deadlines.reply (when not zero). A backend that stops
//    answering while its socket stays open (SIGSTOP, a wedged server, a
//    half-open network) is thus treated as a lost connection: the claimer
//    drops it and reconnects, and the server rolls the dropped transaction
//    back once it notices (its row locks go with it);
//  - behind a transaction pooler (transaction_pooling::enabled) statements
//    go unnamed, each pipeline that opens a transaction starts with
//    sql/transaction_bounds.sql (same round trip), and listen() subscribes
//    on a separate direct connection, or nowhere (wait_readable() then only
//    sleeps: a poll); see db/connection_settings.hpp. A direct connection
//    takes none of these branches;
//  - one statement at a time: the caller (one claimer coroutine) owns it.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <libpq-fe.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/failure.hpp"
#include "db/connection_settings.hpp"
#include "db/sql_statement.hpp"

namespace voucherd {

namespace asio = boost::asio;

class pg_error : public voucherd_error {
 public:
  pg_error(failure_kind kind, std::string statement, std::string sqlstate, bool lost, const std::string& what)
      : voucherd_error{kind, what}, statement_{std::move(statement)}, sqlstate_{std::move(sqlstate)}, lost_{lost} {}
  const std::string& statement() const noexcept { return statement_; }
  const std::string& sqlstate() const noexcept { return sqlstate_; }
  const std::string& constraint() const noexcept { return constraint_; }
  bool lost_connection() const noexcept { return lost_; }
  // Whether running the transaction again at once helps (retry_at_once in
  // common/failure.hpp): a racing duplicate delivery, a serialization
  // failure or a deadlock.
  bool worth_retrying() const noexcept { return !lost_ && retry_at_once(sqlstate_, constraint_); }
  pg_error with_constraint(std::string constraint) && {
    constraint_ = std::move(constraint);
    return std::move(*this);
  }

 private:
  std::string statement_;
  std::string sqlstate_;
  std::string constraint_;
  bool lost_ = false;
};

// The rows of one result, read as text.
class pg_rows {
 public:
  pg_rows() = default;
  explicit pg_rows(PGresult* r) : result_{r, &PQclear} {}
  int size() const { return result_ ? PQntuples(result_.get()) : 0; }
  bool empty() const { return size() == 0; }
  bool is_null(int row, int col) const { return PQgetisnull(result_.get(), row, col) != 0; }
  std::string_view text(int row, int col) const {
    return {PQgetvalue(result_.get(), row, col),
            static_cast<std::size_t>(PQgetlength(result_.get(), row, col))};
  }
  std::int64_t int64(int row, int col) const;
  std::optional<std::int64_t> opt_int64(int row, int col) const {
    if (is_null(row, col)) return std::nullopt;
    return int64(row, col);
  }
  // A bytea column in hex text form, decoded.
  std::string bytes(int row, int col) const;
  int column(const char* name) const;

 private:
  std::shared_ptr<PGresult> result_;
};

// A parameter: text, or SQL NULL when nullopt.
using pg_param = std::optional<std::string>;

class pg_connection {
 public:
  // conninfo: a libpq connection string (connection_settings::conninfo()).
  pg_connection(asio::io_context& io, std::string conninfo, pg_deadlines deadlines = {},
                transaction_pooling pooling = {});
  ~pg_connection();
  pg_connection(const pg_connection&) = delete;
  pg_connection& operator=(const pg_connection&) = delete;

  asio::awaitable<void> connect();
  bool is_open() const;
  void close();

  asio::awaitable<pg_rows> exec(const sql_statement& statement, std::vector<pg_param> params = {});
  asio::awaitable<void> exec_simple(const sql_statement& statement);
  // exec(), with the parameterless `then` (COMMIT) sent behind it in the
  // same round trip; returns statement's rows. Should statement fail, `then`
  // does not run (the pipeline is aborted) and statement's error is thrown.
  asio::awaitable<pg_rows> exec_then(const sql_statement& statement, std::vector<pg_param> params,
                                     const sql_statement& then);
  void defer(const sql_statement& statement, std::vector<pg_param> params = {});
  void defer_simple(const sql_statement& statement);
  asio::awaitable<void> rollback();

  // Runs a LISTEN statement where notifications can reach this connection:
  // on it when direct; behind a pooler on a direct connection to
  // pooling.listen_conninfo (opened here, closed with this one), or, without
  // one, nowhere.
  asio::awaitable<void> listen(const sql_statement& statement);
  // True when a NOTIFY arrived since the last call (drains libpq's queue).
  bool take_notifications();
  // Waits until the server sends something (a NOTIFY) or the timeout passes.
  asio::awaitable<void> wait_readable(std::chrono::milliseconds timeout);

 private:
  // One statement of a pipeline: a catalog statement run prepared, or a
  // parameterless one (BEGIN, COMMIT) run unnamed.
  struct queued {
    const sql_statement* statement;
    std::vector<pg_param> params;
    bool prepared;
  };
  asio::awaitable<void> prepare(const sql_statement& statement);
  // Behind a pooler, a statement about to open a transaction (explicit or
  // the pipeline's implicit one) gets transaction_bounds queued ahead of it.
  void bound_transaction();
  // A connection that could not be opened: config or transient by libpq's
  // message (classify_connect_failure), lost_connection() true.
  static pg_error connect_failure(const std::string& why);
  // Sends one statement (the prepared one must exist); false if libpq refused.
  bool send(const queued& q);
  // Sends what is deferred, then `last`, then `then` (when given), as one
  // pipeline; returns the rows of `last`.
  asio::awaitable<pg_rows> run_pipeline(queued last, const sql_statement* then = nullptr);
  asio::awaitable<pg_rows> finish(std::string_view statement);
  // Sends what libpq buffered; waits for the socket as needed.
  asio::awaitable<void> flush(std::string_view statement);
  // Waits until PQgetResult will not block.
  asio::awaitable<void> until_result(std::string_view statement);
  pg_error error_of(PGresult* r, std::string_view statement) const;
  // Waits for the socket; throws lost() when the watchdog ran out first.
  asio::awaitable<void> wait(bool for_write, std::string_view statement);
  // Starts the reply deadline of the statement about to be sent: one timer
  // per statement (not one per socket wait), which cancels the socket's
  // wait when it runs out.
  void arm();
  // The statement's replies are all in.
  void disarm();
  pg_error lost(std::string_view statement, std::string why = {});

  asio::io_context& io_;
  std::string url_;
  pg_deadlines deadlines_;
  transaction_pooling pooling_;
  std::unique_ptr<pg_connection> listener_;  // behind a pooler: where LISTEN went
  // Shared with the watchdog's handler, which may run after this object is
  // gone (a timer cancelled by its destruction still calls its handler).
  struct watch {
    bool active = false;   // a statement is waiting for its replies
    bool expired = false;  // and its deadline ran out
    asio::posix::stream_descriptor* socket = nullptr;
  };
  std::shared_ptr<watch> watch_ = std::make_shared<watch>();
  std::unique_ptr<asio::steady_timer> watchdog_;
  PGconn* conn_ = nullptr;
  std::unique_ptr<asio::posix::stream_descriptor> socket_;
  std::unordered_set<std::string_view> prepared_;  // catalog names: their storage is static
  std::vector<queued> deferred_;
};

}  // namespace voucherd
