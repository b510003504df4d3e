#pragma once
// What the bounded-wait and true-answer tests (issue 8) share: a child
// process that is always reaped (even when a check throws), a child whose
// stdin is a pipe the test writes at its own pace, a Postgres session that
// holds row or table locks on purpose (and waits for claims to wait on them),
// and a backend frozen with SIGSTOP that is always thawed again.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>
#include <fmt/format.h>
#include <pqxx/pqxx>

#include "support/files.hpp"
#include "support/http_client.hpp"
#include "support/json_field.hpp"
#include "support/test_db.hpp"
#include "support/wait.hpp"

namespace voucherd::test::fault {

using namespace std::chrono_literals;

// A running `voucherd` child. Its exit status is kept once reaped; the
// destructor kills and reaps it if the test did not, so no test leaves a
// process behind, whatever check failed first. stdout and stderr go to
// temporary files, removed at the end.
class child {
 public:
  // stdin from /dev/null, or from a pipe the test writes (with_stdin_pipe).
  child(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {},
        bool with_stdin_pipe = false)
      : out_path_{temp_path("out")}, err_path_{temp_path("err")} {
    int in_pipe[2] = {-1, -1};
    if (with_stdin_pipe && pipe2(in_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    int pid = -1;
    try {
      pid = spawn_voucherd(args, child_io{{}, in_pipe[0], out_path_, err_path_}, env);
    } catch (...) {
      if (with_stdin_pipe) {
        close(in_pipe[0]);
        close(in_pipe[1]);
      }
      throw;
    }
    if (with_stdin_pipe) close(in_pipe[0]);
    pid_ = pid;
    stdin_fd_ = with_stdin_pipe ? in_pipe[1] : -1;
  }
  ~child() {
    close_stdin();
    if (!exit_code_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
    std::error_code ec;
    std::filesystem::remove(out_path_, ec);
    std::filesystem::remove(err_path_, ec);
  }
  child(const child&) = delete;
  child& operator=(const child&) = delete;

  int pid() const { return pid_; }

  // Writes to the child's stdin pipe (blocking); false when it is closed.
  bool write_stdin(const std::string& text) {
    std::size_t done = 0;
    while (stdin_fd_ >= 0 && done < text.size()) {
      const ssize_t n = ::write(stdin_fd_, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return stdin_fd_ >= 0;
  }
  void close_stdin() {
    if (stdin_fd_ >= 0) ::close(stdin_fd_);
    stdin_fd_ = -1;
  }

  // Whether it is still running (reaps it, keeping the status, if not).
  bool running() {
    if (exit_code_) return false;
    int status = 0;
    const int r = waitpid(pid_, &status, WNOHANG);
    if (r == 0) return true;
    exit_code_ = r == pid_ ? decode(status) : -1;
    return false;
  }

  // The exit status (128+signal if killed by one), waiting at most `timeout`;
  // nullopt when still running then (it keeps running: kill() or the
  // destructor ends it).
  std::optional<int> wait_for(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (running()) {
      if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(20ms);
    }
    return exit_code_;
  }

  // SIGKILL and reap; the status it ended with.
  int kill() {
    if (running()) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      exit_code_ = decode(status);
    }
    return *exit_code_;
  }

  // SIGTERM, then the exit status within `timeout`, else SIGKILL and -1.
  int terminate(std::chrono::milliseconds timeout) {
    if (running()) ::kill(pid_, SIGTERM);
    if (auto code = wait_for(timeout)) return *code;
    kill();
    return -1;
  }

  std::optional<int> exit_code() const { return exit_code_; }
  std::string out() const { return read_file(out_path_); }
  std::string err() const { return read_file(err_path_); }
  // What a failed check should show about this child.
  std::string describe() const {
    return fmt::format("exit {}\n--- stdout ---\n{}\n--- stderr (tail) ---\n{}",
                       exit_code_ ? std::to_string(*exit_code_) : std::string{"(running)"}, out(), tail(err(), 2000));
  }

  static std::string tail(const std::string& s, std::size_t n) {
    return s.size() <= n ? s : "..." + s.substr(s.size() - n);
  }

 private:
  static int decode(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
  }

  int pid_ = -1;
  int stdin_fd_ = -1;
  std::optional<int> exit_code_;
  std::string out_path_, err_path_;
};

// A session of the test's own that holds locks on purpose, in one open
// transaction, until release() (rollback) or commit(); rolled back when it dies.
class lock_holder {
 public:
  explicit lock_holder(const test_database& db) : conn_{db.connect()}, txn_{std::make_unique<pqxx::work>(*conn_)} {
    backend_pid_ = conn_->backendpid();
  }
  ~lock_holder() {
    try {
      if (txn_) txn_->abort();
    } catch (...) {
    }
  }
  lock_holder(const lock_holder&) = delete;
  lock_holder& operator=(const lock_holder&) = delete;

  pqxx::work& txn() { return *txn_; }
  int backend_pid() const { return backend_pid_; }

  // Row-locks (FOR UPDATE) the free vouchers of `campaign` with these ids;
  // returns how many were locked.
  std::size_t lock_vouchers(const std::string& campaign, const std::vector<std::int64_t>& ids) {
    std::string list;
    for (auto id : ids) list += (list.empty() ? "" : ",") + std::to_string(id);
    return txn_->exec("SELECT v.id FROM voucher_item v JOIN campaign c ON c.id = v.campaign_id WHERE c.name = " +
                      txn_->quote(campaign) + " AND v.user_id IS NULL AND v.id IN (" + list +
                      ") ORDER BY v.id FOR UPDATE OF v")
        .size();
  }
  // Takes a voucher it holds locked for `user`, as a claim would (owner and
  // its outbox row), to be committed by commit().
  void claim_locked(std::int64_t voucher_id, const std::string& user) {
    txn_->exec("UPDATE voucher_item SET user_id = " + txn_->quote(user) + ", claimed_at = now() WHERE id = " +
               std::to_string(voucher_id));
    txn_->exec("INSERT INTO notification_outbox (idempotency_key, campaign_id, voucher_id, user_id, code) "
               "SELECT id || '-holder', campaign_id, id, user_id, code FROM voucher_item WHERE id = " +
               std::to_string(voucher_id));
  }
  void lock_table_exclusive(const std::string& table) {
    txn_->exec("LOCK TABLE " + txn_->quote_name(table) + " IN ACCESS EXCLUSIVE MODE");
  }
  void release() { end(false); }
  void commit() { end(true); }

 private:
  void end(bool commit) {
    if (!txn_) return;
    if (commit) txn_->commit();
    else txn_->abort();
    txn_.reset();
  }

  std::unique_ptr<pqxx::connection> conn_;
  std::unique_ptr<pqxx::work> txn_;
  int backend_pid_ = 0;
};

// Waits until backends have waited on a lock that `holder_pid` holds in
// `waits` distinct transactions (a claim that gives up at its lock timeout
// and tries again waits in a new one), or `stop` holds, or `timeout` passes;
// returns how many distinct waits it saw.
inline std::size_t wait_for_lock_waits(const test_database& db, int holder_pid, std::size_t waits,
                                       const std::function<bool()>& stop, std::chrono::milliseconds timeout) {
  std::set<std::string> seen;  // "pid@xact_start" of each waiting transaction
  auto conn = db.connect();
  wait_until(
      [&] {
        pqxx::nontransaction tx{*conn};
        for (const auto& r : tx.exec(fmt::format("SELECT pid || '@' || xact_start FROM pg_stat_activity "
                                                 "WHERE {} = ANY(pg_blocking_pids(pid))",
                                                 holder_pid)))
          seen.insert(r[0].c_str());
        return seen.size() >= waits || stop();
      },
      timeout);
  return seen.size();
}

// Waits until a backend has waited on a lock that `holder_pid` holds for at
// least `how_long` by the server's clock (its statement started that long
// ago and is still blocked), or `stop` holds, or `timeout` passes; whether
// such a wait was seen.
inline bool wait_for_lock_wait_of(const test_database& db, int holder_pid, std::chrono::milliseconds how_long,
                                  const std::function<bool()>& stop, std::chrono::milliseconds timeout) {
  bool seen = false;
  auto conn = db.connect();
  wait_until(
      [&] {
        pqxx::nontransaction tx{*conn};
        seen = tx.exec(fmt::format("SELECT count(*) FROM pg_stat_activity WHERE {} = ANY(pg_blocking_pids(pid)) "
                                   "AND clock_timestamp() - query_start >= interval '{} milliseconds'",
                                   holder_pid, how_long.count()))[0][0]
                   .as<int>() > 0;
        return seen || stop();
      },
      timeout);
  return seen;
}

// The voucher ids of a campaign, in id order.
inline std::vector<std::int64_t> voucher_ids(const test_database& db, const std::string& campaign) {
  std::vector<std::int64_t> ids;
  auto conn = db.connect();
  pqxx::nontransaction tx{*conn};
  for (const auto& r : tx.exec("SELECT v.id FROM voucher_item v JOIN campaign c ON c.id = v.campaign_id "
                               "WHERE c.name = " + tx.quote(campaign) + " ORDER BY v.id"))
    ids.push_back(r[0].as<std::int64_t>());
  return ids;
}

// A Postgres backend frozen with SIGSTOP (the server runs under another OS
// user; the tests run as root). Thawed (SIGCONT) by thaw() or at the latest
// when this dies, so that a failed check never leaves the server half-stopped.
class frozen_backend {
 public:
  explicit frozen_backend(int pid) : pid_{pid} {
    if (::kill(pid_, SIGSTOP) != 0) throw std::runtime_error(fmt::format("SIGSTOP {} failed: errno {}", pid_, errno));
    frozen_ = true;
  }
  ~frozen_backend() { thaw(); }
  frozen_backend(const frozen_backend&) = delete;
  frozen_backend& operator=(const frozen_backend&) = delete;
  void thaw() {
    if (frozen_) ::kill(pid_, SIGCONT);
    frozen_ = false;
  }
  int pid() const { return pid_; }

 private:
  int pid_;
  bool frozen_ = false;
};

// The port of a child worker's "http listening" line, waiting for it.
inline std::optional<unsigned short> wait_for_http_port(child& worker, std::chrono::milliseconds timeout) {
  return test::wait_for_http_port([&] { return worker.err(); }, [&] { return worker.running(); }, timeout);
}

}  // namespace voucherd::test::fault
