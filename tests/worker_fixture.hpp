#pragma once
// What the worker tests share: one queue under test (stdin, pg or redis) on
// a fresh database (and, for redis, a throwaway redis-server), messages put
// on it through `voucherd enqueue`, `voucherd worker` processes run against
// it, and the recorded outcome of every message read back in enqueue order.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <hiredis/hiredis.h>

#include "redis/redis_node.hpp"
#include "redis/redis_server.hpp"
#include "support/test_db.hpp"

extern char** environ;

namespace voucherd::test {

struct recorded_outcome {
  std::string status;
  std::string reason;
  std::string voucher_id;  // "" when none
  std::string user_id;     // as recorded ("" when the source does not record it)
};

// Polls `done` every 50 ms until it holds or `timeout` passes; returns whether it held.
inline bool wait_until(const std::function<bool()>& done, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds{50});
  }
  return done();
}

// Whether a child is still running (it has not exited).
inline bool still_running(int pid) {
  int status = 0;
  return waitpid(pid, &status, WNOHANG) == 0;
}

// SIGTERM, then the exit status, or -1 when it did not exit within `timeout`
// (it is then killed, so no test leaves a process behind).
inline int terminate_and_wait(int pid, std::chrono::seconds timeout, double* seconds_taken = nullptr) {
  const auto start = std::chrono::steady_clock::now();
  ::kill(pid, SIGTERM);
  int status = 0;
  while (std::chrono::steady_clock::now() - start < timeout) {
    const int r = waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      if (seconds_taken) *seconds_taken = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
  ::kill(pid, SIGKILL);
  wait_exit(pid);
  return -1;
}

// Starts the real binary with stdin read from `input_path`, stdout and
// stderr to the given files; returns the pid.
inline int spawn_with_input(const std::vector<std::string>& args, const std::string& input_path,
                            const std::string& out_path, const std::string& err_path) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, input_path.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<std::string> argv_s{voucherd_bin()};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, voucherd_bin(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("posix_spawn failed");
  return pid;
}

inline std::string temp_path(const std::string& stem) {
  static std::mt19937_64 rng{20261126};
  return (std::filesystem::temp_directory_path() /
          fmt::format("vd-{}-{}-{:08x}", stem, ::getpid(), static_cast<unsigned>(rng())))
      .string();
}

inline std::string read_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

class queue_under_test {
 public:
  queue_under_test(std::string kind, const std::string& campaign, int codes)
      : kind_{std::move(kind)}, campaign_{campaign} {
    db_.make_campaign(campaign, codes);
    // A queue's Redis keeps its data across a restart (append-only file).
    if (kind_ == "redis") redis_ = std::make_unique<redis_server>(redis_server::persistence::append_only);
  }

  const std::string& kind() const { return kind_; }
  test_database& db() { return db_; }
  redis_server* redis() { return redis_.get(); }
  std::string redis_url() const { return redis_ ? redis_->endpoint().url() : std::string{}; }
  std::size_t enqueued() const { return enqueued_; }
  bool has_queue() const { return kind_ != "stdin"; }

  // Puts messages on the queue (for stdin: keeps them for the run).
  void enqueue(const std::vector<std::string>& lines) {
    enqueued_ += lines.size();
    if (kind_ == "stdin") {
      for (const auto& l : lines) input_ += l + "\n";
      return;
    }
    const auto path = temp_path("messages");
    {
      std::ofstream out{path, std::ios::binary};
      for (const auto& l : lines) out << l << '\n';
    }
    std::vector<std::string> args{"enqueue", "--source", kind_, path, "--database-url", db_.url()};
    if (redis_) args.insert(args.end(), {"--redis-url", redis_url(), "--stream", k_stream});
    auto r = run_voucherd(args);
    std::filesystem::remove(path);
    if (r.exit_code != 0) throw std::runtime_error("enqueue failed: " + r.err);
  }

  // The stdin messages given so far, as the worker would read them.
  const std::string& input() const { return input_; }

  std::vector<std::string> worker_args(int concurrency, int batch, const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> a{"worker", "--source", kind_, "--campaign", campaign_, "--database-url", db_.url(),
                               "--concurrency", std::to_string(concurrency), "--batch", std::to_string(batch)};
    if (redis_) a.insert(a.end(), {"--redis-url", redis_url(), "--stream", k_stream, "--claim-idle-ms", "1000"});
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }

  // How many messages have a recorded outcome (queue sources).
  std::int64_t answered() const {
    if (kind_ == "pg") return db_.count("SELECT count(*) FROM message_queue WHERE done_at IS NOT NULL");
    return db_.count("SELECT count(*) FROM message_outcome");
  }

  // Runs one worker until every enqueued message is answered, then SIGTERM.
  // Returns the outcomes in enqueue order; `exit_code` gets the worker's status.
  std::vector<recorded_outcome> drain(int concurrency, int batch, int* exit_code, std::string* log = nullptr) {
    if (kind_ == "stdin") {
      auto r = run_voucherd(worker_args(concurrency, batch), input_);
      *exit_code = r.exit_code;
      if (log) *log = r.err;
      std::vector<recorded_outcome> out;
      for (const auto& line : lines_of(r.out)) {
        const auto j = boost::json::parse(line).as_object();
        auto text = [&](const char* k) -> std::string {
          if (!j.contains(k)) return "";
          const auto& v = j.at(k);
          return v.is_string() ? std::string{v.get_string()} : boost::json::serialize(v);
        };
        out.push_back({text("status"), text("reason"), text("voucher_id"), text("user_id")});
      }
      return out;
    }
    const auto err_path = temp_path("worker-err");
    const int pid = spawn_voucherd(worker_args(concurrency, batch), {}, err_path);
    const bool all = wait_until([&] { return answered() >= static_cast<std::int64_t>(enqueued_); },
                                std::chrono::seconds{120});
    *exit_code = terminate_and_wait(pid, std::chrono::seconds{15});
    if (log) *log = read_file(err_path);
    std::filesystem::remove(err_path);
    if (!all) return {};
    return outcomes();
  }

  // The recorded outcomes of a queue source, in enqueue order.
  std::vector<recorded_outcome> outcomes() const {
    std::vector<recorded_outcome> out;
    auto conn = db_.connect();
    pqxx::nontransaction tx{*conn};
    if (kind_ == "pg") {
      for (const auto& r : tx.exec("SELECT q.status, coalesce(q.reason, ''), coalesce(q.voucher_id::text, ''), "
                                   "coalesce(v.user_id, '') FROM message_queue q "
                                   "LEFT JOIN voucher_item v ON v.id = q.voucher_id ORDER BY q.id"))
        out.push_back({r[0].c_str(), r[1].c_str(), r[2].c_str(), r[3].c_str()});
      return out;
    }
    // Stream ids are "<ms>-<seq>": order them numerically.
    for (const auto& r : tx.exec("SELECT status, coalesce(reason, ''), coalesce(voucher_id::text, ''), "
                                 "coalesce(user_id, '') FROM message_outcome "
                                 "ORDER BY split_part(message_id, '-', 1)::bigint, "
                                 "split_part(message_id, '-', 2)::bigint"))
      out.push_back({r[0].c_str(), r[1].c_str(), r[2].c_str(), r[3].c_str()});
    return out;
  }

  static constexpr const char* k_stream = "vd:test";

 private:
  std::string kind_;
  std::string campaign_;
  test_database db_;
  std::unique_ptr<redis_server> redis_;
  std::string input_;
  std::size_t enqueued_ = 0;
};

// An integer answer of a Redis command: the reply itself, else the first
// element of an array reply (XPENDING's count), else the array's length; -1
// when the server does not answer.
inline std::int64_t redis_int(redis_server& server, const std::vector<std::string>& argv) {
  redis_node node{server.endpoint(), std::chrono::milliseconds{2000}};
  auto r = node.command(argv);
  if (!r) return -1;
  if (r->type == REDIS_REPLY_INTEGER) return r->integer;
  if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_INTEGER)
    return r->element[0]->integer;
  if (r->type == REDIS_REPLY_ARRAY) return static_cast<std::int64_t>(r->elements);
  return -1;
}

inline const std::vector<std::string>& all_sources() {
  static const std::vector<std::string> k{"stdin", "pg", "redis"};
  return k;
}

}  // namespace voucherd::test

namespace voucherd::test {

// A Postgres server of the test's own, so that it can be restarted without
// disturbing tests running in parallel: initdb'ed into a temporary
// directory with the binaries and OS user scripts/test exports
// (VOUCHERD_TEST_PG_BIN, VOUCHERD_TEST_PG_USER), on a free loopback port.
// While it lives, VOUCHERD_TEST_ADMIN_URL of this process points at it, so
// test_database creates its databases there. Stopped and removed at the end.
class private_postgres {
 public:
  private_postgres() {
    const char* bin = std::getenv("VOUCHERD_TEST_PG_BIN");
    const char* user = std::getenv("VOUCHERD_TEST_PG_USER");
    if (!bin || !user) throw std::runtime_error("VOUCHERD_TEST_PG_BIN/USER are not set: run through scripts/test");
    bin_ = bin;
    user_ = user;
    previous_admin_ = std::getenv("VOUCHERD_TEST_ADMIN_URL") ? std::getenv("VOUCHERD_TEST_ADMIN_URL") : "";
    dir_ = temp_path("pg");
    std::filesystem::create_directories(dir_);
    run(fmt::format("chown {} {} && chmod 700 {}", user_, dir_, dir_));
    run(as_user(fmt::format("{}/initdb -D {}/data -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null",
                            bin_, dir_)));
    port_ = free_local_port();
    run(as_user(fmt::format(
        "{}/pg_ctl -D {}/data -l {}/server.log -o '-c listen_addresses=127.0.0.1 -c port={} "
        "-c unix_socket_directories={} -c max_connections=300 -c fsync=off -c synchronous_commit=off "
        "-c full_page_writes=off' -w start >/dev/null",
        bin_, dir_, dir_, port_, dir_)));
    setenv("VOUCHERD_TEST_ADMIN_URL", admin_url_for(port_).c_str(), 1);
  }
  ~private_postgres() {
    std::system(as_user(fmt::format("{}/pg_ctl -D {}/data -m immediate -w stop >/dev/null 2>&1", bin_, dir_)).c_str());
    std::filesystem::remove_all(dir_);
    setenv("VOUCHERD_TEST_ADMIN_URL", previous_admin_.c_str(), 1);
  }
  private_postgres(const private_postgres&) = delete;
  private_postgres& operator=(const private_postgres&) = delete;

  // Restarts the server (fast shutdown: every connection is cut); it comes
  // back on the same port, because pg_ctl keeps its options in postmaster.opts.
  void restart() { run(as_user(fmt::format("{}/pg_ctl -D {}/data -m fast -w restart >/dev/null", bin_, dir_))); }
  int port() const { return port_; }

 private:
  static std::string admin_url_for(int port) { return fmt::format("postgresql://postgres@127.0.0.1:{}/postgres", port); }
  std::string as_user(const std::string& command) const {
    return fmt::format("runuser -u {} -- sh -c \"{}\"", user_, command);
  }
  static void run(const std::string& command) {
    if (std::system(command.c_str()) != 0) throw std::runtime_error("failed: " + command);
  }

  std::string bin_, user_, dir_, previous_admin_;
  int port_ = 0;
};

}  // namespace voucherd::test
