#include "db/pg_connection.hpp"

#include <charconv>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include "db/libpq_support.hpp"
#include "sql_catalog.hpp"

namespace voucherd {

using namespace boost::asio::experimental::awaitable_operators;
using asio::use_awaitable;

std::int64_t pg_rows::int64(int row, int col) const {
  const auto t = text(row, col);
  std::int64_t v = 0;
  const auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (ec != std::errc{} || p != t.data() + t.size())
    throw voucherd_error{failure_kind::internal, fmt::format("expected an integer, got '{}'", t)};
  return v;
}

std::string pg_rows::bytes(int row, int col) const {
  std::size_t len = 0;
  unsigned char* raw =
      PQunescapeBytea(reinterpret_cast<const unsigned char*>(PQgetvalue(result_.get(), row, col)), &len);
  if (!raw) throw voucherd_error{failure_kind::internal, "cannot decode a bytea value"};
  std::string out(reinterpret_cast<const char*>(raw), len);
  PQfreemem(raw);
  return out;
}

int pg_rows::column(const char* name) const {
  const int c = PQfnumber(result_.get(), name);
  if (c < 0) throw voucherd_error{failure_kind::internal, fmt::format("result has no column {}", name)};
  return c;
}

pg_connection::pg_connection(asio::io_context& io, std::string conninfo, pg_deadlines deadlines,
                             transaction_pooling pooling)
    : io_{io}, url_{std::move(conninfo)}, deadlines_{deadlines}, pooling_{std::move(pooling)} {}

pg_connection::~pg_connection() { close(); }

bool pg_connection::is_open() const { return conn_ && socket_ && PQstatus(conn_) == CONNECTION_OK; }

void pg_connection::close() {
  deferred_.clear();
  listener_.reset();
  watch_->active = false;
  watch_->socket = nullptr;
  if (watchdog_) watchdog_->cancel();
  if (socket_) {
    // libpq owns the descriptor: hand it back before PQfinish closes it.
    socket_->release();
    socket_.reset();
  }
  if (conn_) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
}

pg_error pg_connection::lost(std::string_view statement, std::string why) {
  if (why.empty()) why = conn_ ? trimmed(PQerrorMessage(conn_)) : "not connected";
  return pg_error{failure_kind::transient, std::string{statement}, "", true,
                  fmt::format("database connection lost during {}: {}", statement, why)};
}

pg_error pg_connection::connect_failure(const std::string& why) {
  return pg_error{classify_connect_failure(why), "connect", "", true,
                  fmt::format("cannot connect to the database: {}", why)};
}

asio::awaitable<void> pg_connection::connect() {
  close();
  conn_ = PQconnectStart(url_.c_str());
  if (!conn_ || PQstatus(conn_) == CONNECTION_BAD) {
    auto e = connect_failure(conn_ ? trimmed(PQerrorMessage(conn_)) : "out of memory");
    close();
    throw e;
  }
  // libpq does not enforce connect_timeout on an asynchronous connect; we do.
  const auto deadline = deadlines_.connect.count() > 0 ? std::chrono::steady_clock::now() + deadlines_.connect
                                                       : std::chrono::steady_clock::time_point::max();
  auto state = PGRES_POLLING_WRITING;
  while (state != PGRES_POLLING_OK) {
    if (state == PGRES_POLLING_FAILED) {
      auto e = connect_failure(trimmed(PQerrorMessage(conn_)));
      close();
      throw e;
    }
    // The socket may change between polls (another address is tried): wrap
    // it afresh each time and hand it back before polling again.
    asio::posix::stream_descriptor sd{io_, PQsocket(conn_)};
    asio::steady_timer timer{io_, deadline};
    auto which = co_await (sd.async_wait(state == PGRES_POLLING_READING ? asio::posix::descriptor_base::wait_read
                                                                       : asio::posix::descriptor_base::wait_write,
                                         use_awaitable) ||
                           timer.async_wait(use_awaitable));
    sd.release();
    if (which.index() == 1) {
      close();
      throw lost("connect", "cannot connect to the database: timed out");
    }
    state = PQconnectPoll(conn_);
  }
  if (PQsetnonblocking(conn_, 1) != 0) {
    auto e = lost("connect", "cannot switch the connection to non-blocking mode");
    close();
    throw e;
  }
  socket_ = std::make_unique<asio::posix::stream_descriptor>(io_, PQsocket(conn_));
  prepared_.clear();
}

void pg_connection::arm() {
  watch_->expired = false;
  if (deadlines_.reply.count() <= 0) return;
  if (!watchdog_) watchdog_ = std::make_unique<asio::steady_timer>(io_);
  watch_->active = true;
  watch_->socket = socket_.get();
  watchdog_->expires_after(deadlines_.reply);  // cancels the previous statement's wait
  watchdog_->async_wait([w = watch_](boost::system::error_code ec) {
    if (ec || !w->active || !w->socket) return;
    w->expired = true;
    w->socket->cancel();
  });
}

void pg_connection::disarm() {
  watch_->active = false;
  // Also ends the timer's wait, so that nothing is left pending on the
  // io_context between statements (a blocking caller runs it to completion).
  if (watchdog_) watchdog_->cancel();
}

asio::awaitable<void> pg_connection::wait(bool for_write, std::string_view statement) {
  const auto what = for_write ? asio::posix::descriptor_base::wait_write : asio::posix::descriptor_base::wait_read;
  boost::system::error_code ec;
  co_await socket_->async_wait(what, asio::redirect_error(use_awaitable, ec));
  if (watch_->expired) {
    auto e = lost(statement, fmt::format("no reply within {} ms; the connection is given up", deadlines_.reply.count()));
    close();
    throw e;
  }
  if (ec) throw lost(statement, ec.message());
}

asio::awaitable<void> pg_connection::prepare(const sql_statement& statement) {
  // Prepared on first use (like libpqxx): some catalog statements name
  // temporary tables that exist only inside the command that uses them.
  // Behind a pooler never: send() runs it unnamed.
  if (pooling_.enabled || prepared_.contains(statement.name)) co_return;
  arm();
  if (!PQsendPrepare(conn_, statement.name_str().c_str(), statement.text_str().c_str(), 0, nullptr))
    throw lost(statement.name);
  co_await finish(statement.name);
  prepared_.insert(statement.name);
}

void pg_connection::defer(const sql_statement& statement, std::vector<pg_param> params) {
  deferred_.push_back({&statement, std::move(params), true});
}

void pg_connection::defer_simple(const sql_statement& statement) { deferred_.push_back({&statement, {}, false}); }

void pg_connection::bound_transaction() {
  if (!pooling_.enabled || PQtransactionStatus(conn_) != PQTRANS_IDLE) return;
  if (!deferred_.empty() && deferred_.front().statement == &sql::transaction_bounds) return;
  const auto bounds = pooling_.bounds();
  deferred_.insert(deferred_.begin(), queued{&sql::transaction_bounds, {bounds.begin(), bounds.end()}, true});
}

bool pg_connection::send(const queued& q) {
  if (!q.prepared) return PQsendQueryParams(conn_, q.statement->text_str().c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0);
  std::vector<const char*> values;
  values.reserve(q.params.size());
  for (const auto& p : q.params) values.push_back(p ? p->c_str() : nullptr);
  const int n = static_cast<int>(values.size());
  if (pooling_.enabled)
    return PQsendQueryParams(conn_, q.statement->text_str().c_str(), n, nullptr, values.data(), nullptr, nullptr, 0);
  return PQsendQueryPrepared(conn_, q.statement->name_str().c_str(), n, values.data(), nullptr, nullptr, 0);
}

asio::awaitable<void> pg_connection::rollback() {
  deferred_.clear();
  if (!is_open() || PQtransactionStatus(conn_) == PQTRANS_IDLE) co_return;
  co_await exec_simple(sql::worker_rollback);
}

namespace {

// A COMMIT the server answered: the transaction is durable whatever happens
// to the connection after (a FATAL for pg_terminate_backend, a reset before
// the pipeline's sync).
bool is_commit(PGresult* r) {
  return PQresultStatus(r) == PGRES_COMMAND_OK && std::string_view{PQcmdStatus(r)} == "COMMIT";
}

}  // namespace

asio::awaitable<pg_rows> pg_connection::run_pipeline(queued last, const sql_statement* then) {
  auto items = std::move(deferred_);
  deferred_.clear();
  items.push_back(std::move(last));
  const std::size_t wanted = items.size() - 1;  // whose rows are returned
  if (then) items.push_back(queued{then, {}, false});
  for (const auto& item : items)
    if (item.prepared) co_await prepare(*item.statement);
  const auto& name = items[wanted].statement->name;
  arm();
  if (PQenterPipelineMode(conn_) != 1) throw lost(name, "cannot enter pipeline mode");
  for (const auto& item : items)
    if (!send(item)) throw lost(item.statement->name);
  if (PQpipelineSync(conn_) != 1) throw lost(name);
  co_await flush(name);
  // Results come per statement, each list ended by a null; then the sync.
  // After an error the rest of the pipeline reports PIPELINE_ABORTED.
  pg_rows rows;
  std::optional<pg_error> error;
  std::size_t index = 0;
  // Whether the pipeline ended in a COMMIT that was answered, before any
  // error: then it succeeded, even if the connection is lost before its sync.
  bool committed = false;
  try {
    for (bool synced = false; !synced;) {
      co_await until_result(name);
      PGresult* r = PQgetResult(conn_);
      if (!r) {
        if (++index > items.size() || PQstatus(conn_) == CONNECTION_BAD) throw lost(name);
        arm();  // the server times each statement on its own; so does the client
        continue;
      }
      switch (PQresultStatus(r)) {
        case PGRES_PIPELINE_SYNC: synced = true; PQclear(r); break;
        case PGRES_FATAL_ERROR:
        case PGRES_BAD_RESPONSE:
          if (!error) error.emplace(error_of(r, items[std::min(index, items.size() - 1)].statement->name));
          PQclear(r);
          break;
        default:
          // Only the last statement's: one after it would be left undone.
          committed = committed || (!error && index + 1 == items.size() && is_commit(r));
          if (index == wanted) rows = pg_rows{r};
          else PQclear(r);
      }
    }
  } catch (const pg_error&) {
    if (!committed) throw;
  }
  disarm();
  if (committed && (error || PQstatus(conn_) == CONNECTION_BAD || PQexitPipelineMode(conn_) != 1)) {
    close();  // what failed came after the commit; the next use reconnects
    co_return rows;
  }
  if (PQexitPipelineMode(conn_) != 1) throw lost(name, "cannot leave pipeline mode");
  if (PQstatus(conn_) == CONNECTION_BAD) {
    if (error) throw pg_error{failure_kind::transient, error->statement(), error->sqlstate(), true, error->what()};
    throw lost(name);
  }
  if (error) throw *error;
  co_return rows;
}

asio::awaitable<pg_rows> pg_connection::exec(const sql_statement& statement, std::vector<pg_param> params) {
  if (!is_open()) throw lost(statement.name, "not connected");
  bound_transaction();
  if (!deferred_.empty()) {
    // A named local, not a braced temporary in the co_await: GCC 12 destroys
    // such temporaries twice.
    queued last{&statement, std::move(params), true};
    co_return co_await run_pipeline(std::move(last));
  }
  co_await prepare(statement);
  const queued one{&statement, std::move(params), true};
  arm();
  if (!send(one)) throw lost(statement.name);
  co_return co_await finish(statement.name);
}

asio::awaitable<pg_rows> pg_connection::exec_then(const sql_statement& statement, std::vector<pg_param> params,
                                                  const sql_statement& then) {
  if (!is_open()) throw lost(statement.name, "not connected");
  bound_transaction();
  queued last{&statement, std::move(params), true};
  co_return co_await run_pipeline(std::move(last), &then);
}

asio::awaitable<void> pg_connection::exec_simple(const sql_statement& statement) {
  if (!is_open()) throw lost(statement.name, "not connected");
  bound_transaction();
  if (!deferred_.empty()) {
    queued last{&statement, {}, false};
    co_await run_pipeline(std::move(last));
    co_return;
  }
  arm();
  if (!PQsendQuery(conn_, statement.text_str().c_str())) throw lost(statement.name);
  co_await finish(statement.name);
}

asio::awaitable<void> pg_connection::flush(std::string_view statement) {
  for (;;) {
    const int f = PQflush(conn_);
    if (f == 0) break;
    if (f < 0) throw lost(statement);
    co_await wait(true, statement);
  }
}

asio::awaitable<void> pg_connection::until_result(std::string_view statement) {
  while (PQisBusy(conn_)) {
    co_await wait(false, statement);
    if (!PQconsumeInput(conn_)) throw lost(statement);
  }
}

asio::awaitable<pg_rows> pg_connection::finish(std::string_view statement) {
  co_await flush(statement);
  pg_rows rows;
  std::optional<pg_error> error;
  bool committed = false;  // as in run_pipeline
  try {
    for (;;) {
      co_await until_result(statement);
      PGresult* r = PQgetResult(conn_);
      if (!r) break;
      const auto status = PQresultStatus(r);
      if (status == PGRES_NONFATAL_ERROR) {
        PQclear(r);
      } else if (status == PGRES_FATAL_ERROR || status == PGRES_BAD_RESPONSE) {
        if (!error) error.emplace(error_of(r, statement));
        PQclear(r);
      } else {
        committed = committed || (!error && is_commit(r));
        rows = pg_rows{r};
      }
    }
  } catch (const pg_error&) {
    if (!committed) throw;
  }
  disarm();
  if (committed && (error || PQstatus(conn_) == CONNECTION_BAD)) {
    close();
    co_return rows;
  }
  if (PQstatus(conn_) == CONNECTION_BAD) {
    if (error) throw pg_error{failure_kind::transient, error->statement(), error->sqlstate(), true, error->what()};
    throw lost(statement);
  }
  if (error) throw *error;
  co_return rows;
}

pg_error pg_connection::error_of(PGresult* r, std::string_view statement) const {
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  std::string sqlstate = state ? state : "";
  // The primary message only: one line, without the statement's text
  // ("LINE 24: ..."), fit for a log field and a dead-letter reason.
  const char* primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  const std::string message = primary ? std::string{primary} : trimmed(PQresultErrorMessage(r));
  const char* constraint = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
  const bool gone = PQstatus(conn_) == CONNECTION_BAD || sqlstate.empty() || sqlstate.starts_with("08") ||
                    sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03";
  return pg_error{gone ? failure_kind::transient : classify_sqlstate(sqlstate), std::string{statement}, sqlstate, gone,
                  fmt::format("{} failed: {} (SQLSTATE {})", statement, message, sqlstate)}
      .with_constraint(constraint ? constraint : "");
}

asio::awaitable<void> pg_connection::listen(const sql_statement& statement) {
  if (!pooling_.enabled) {
    co_await exec_simple(statement);
    co_return;
  }
  listener_.reset();
  if (pooling_.listen_conninfo.empty()) co_return;
  auto direct = std::make_unique<pg_connection>(io_, pooling_.listen_conninfo, deadlines_);
  co_await direct->connect();
  co_await direct->exec_simple(statement);
  listener_ = std::move(direct);
}

bool pg_connection::take_notifications() {
  if (listener_) return listener_->take_notifications();
  if (!conn_) return false;
  PQconsumeInput(conn_);
  bool any = false;
  while (PGnotify* n = PQnotifies(conn_)) {
    any = true;
    PQfreemem(n);
  }
  return any;
}

asio::awaitable<void> pg_connection::wait_readable(std::chrono::milliseconds timeout) {
  if (listener_) {
    co_await listener_->wait_readable(timeout);
    co_return;
  }
  if (!is_open()) co_return;
  asio::steady_timer timer{io_, timeout};
  co_await (socket_->async_wait(asio::posix::descriptor_base::wait_read, asio::as_tuple(use_awaitable)) ||
            timer.async_wait(asio::as_tuple(use_awaitable)));
  if (!PQconsumeInput(conn_)) throw lost("wait for notifications");
}

}  // namespace voucherd
