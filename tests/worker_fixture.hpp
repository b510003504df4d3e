#pragma once
// What the worker tests share: one source under test (stdin, pg, redis or
// http) on a fresh database (and, for redis, a throwaway redis-server),
// messages put on it (through `voucherd enqueue` for the queues, kept for
// the run for stdin and http), one `voucherd worker` run against it, and
// the outcome of every message read back in enqueue order.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <hiredis/hiredis.h>

#include "redis/redis_node.hpp"
#include "redis/redis_server.hpp"
#include "support/files.hpp"
#include "support/http_client.hpp"
#include "support/json_field.hpp"
#include "support/test_db.hpp"
#include "support/wait.hpp"

namespace voucherd::test {

struct recorded_outcome {
  std::string status;      // for http, a body refused as no message at all (400, 413) counts as "rejected"
  std::string reason;
  std::string voucher_id;  // "" when none
  std::string user_id;     // as recorded ("" when the source does not record it)
  unsigned http_status = 0;  // http: the answer's status code
};

// SIGTERM (or `signo`), then the exit status, or -1 when it did not exit
// within `timeout` (it is then killed, so no test leaves a process behind).
inline int terminate_and_wait(int pid, std::chrono::seconds timeout, double* seconds_taken = nullptr,
                              int signo = SIGTERM) {
  const auto start = std::chrono::steady_clock::now();
  ::kill(pid, signo);
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

// The exit status of a child that ends by itself (e.g. at the end of its
// input) within `timeout`, or nullopt: it is then killed, so no test leaves
// a process behind.
inline std::optional<int> exit_within(int pid, std::chrono::milliseconds timeout) {
  if (wait_until([pid] { return !still_running(pid); }, timeout)) return wait_exit(pid);
  ::kill(pid, SIGKILL);
  wait_exit(pid);
  return std::nullopt;
}

// Starts the real binary with stdin read from `input_path`, stdout and
// stderr to the given files; returns the pid.
inline int spawn_with_input(const std::vector<std::string>& args, const std::string& input_path,
                            const std::string& out_path, const std::string& err_path) {
  return spawn_voucherd(args, child_io{input_path, -1, out_path, err_path});
}

// The bodies of the entries of a Redis stream that `group` has acknowledged:
// handed out (up to the group's last-delivered-id) and no longer pending.
inline std::vector<std::string> redis_acknowledged_bodies(redis_server& server, const std::string& stream,
                                                          const std::string& group) {
  redis_node node{server.endpoint(), std::chrono::milliseconds{2000}};
  auto text = [](const redisReply* r) { return r && r->str ? std::string(r->str, r->len) : std::string{}; };
  // 1. How far the group has read (XINFO GROUPS: one flat field/value array per group).
  std::string last_delivered;
  auto groups = node.command({"XINFO", "GROUPS", stream});
  if (!groups || groups->type != REDIS_REPLY_ARRAY) return {};
  for (std::size_t g = 0; g < groups->elements; ++g) {
    const auto* fields = groups->element[g];
    std::string name, last;
    for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
      if (text(fields->element[f]) == "name") name = text(fields->element[f + 1]);
      if (text(fields->element[f]) == "last-delivered-id") last = text(fields->element[f + 1]);
    }
    if (name == group) last_delivered = last;
  }
  if (last_delivered.empty() || last_delivered == "0-0") return {};
  // 2. What is still pending, read after (1): an entry handed out since is not counted.
  std::set<std::string> pending;
  auto p = node.command({"XPENDING", stream, group, "-", "+", "1000000"});
  if (!p || p->type != REDIS_REPLY_ARRAY) return {};
  for (std::size_t i = 0; i < p->elements; ++i) pending.insert(text(p->element[i]->element[0]));
  // 3. The bodies of the entries handed out and not pending.
  std::vector<std::string> bodies;
  auto entries = node.command({"XRANGE", stream, "-", last_delivered});
  if (!entries || entries->type != REDIS_REPLY_ARRAY) return {};
  for (std::size_t e = 0; e < entries->elements; ++e) {
    const auto* entry = entries->element[e];
    if (entry->elements != 2 || pending.count(text(entry->element[0]))) continue;
    const auto* fields = entry->element[1];
    for (std::size_t f = 0; f + 1 < fields->elements; f += 2)
      if (text(fields->element[f]) == "body") bodies.push_back(text(fields->element[f + 1]));
  }
  return bodies;
}

// One source under test. For stdin the messages are the worker's input;
// for http a client thread POSTs them to /v1/claims of `voucherd worker
// --http` in order, one at a time (each after the answer to the one
// before), and the answers are the outcomes; for pg and redis they are put
// on the queue and the outcomes read back from the database.
class queue_under_test {
 public:
  // kind: "stdin", "pg", "redis", "http", or "pg-general": the pg queue with
  // every message through the general path (--pg-general-path), whose
  // kind() is "pg".
  queue_under_test(std::string kind, const std::string& campaign, int codes)
      : kind_{std::move(kind)}, campaign_{campaign} {
    if (kind_ == "pg-general") {
      kind_ = "pg";
      extra_args_.push_back("--pg-general-path");
    }
    db_.make_campaign(campaign, codes);
    // A queue's Redis keeps its data across a restart (append-only file).
    if (kind_ == "redis") redis_ = std::make_unique<redis_server>(redis_server::persistence::append_only);
  }
  ~queue_under_test() {
    stop_posting_ = true;
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);  // first: a request in flight then fails at once
      wait_exit(pid_);
    }
    if (poster_.joinable()) poster_.join();
    remove_files();
  }
  queue_under_test(const queue_under_test&) = delete;
  queue_under_test& operator=(const queue_under_test&) = delete;

  const std::string& kind() const { return kind_; }
  test_database& db() { return db_; }
  redis_server* redis() { return redis_.get(); }
  std::string redis_url() const { return redis_ ? redis_->endpoint().url() : std::string{}; }
  std::size_t enqueued() const { return enqueued_; }
  // Whether the source is a queue (pg, redis): one that dead-letters what it rejects.
  bool has_queue() const { return kind_ == "pg" || kind_ == "redis"; }

  // Puts messages on the queue (stdin, http: keeps them for the run).
  void enqueue(const std::vector<std::string>& lines) {
    enqueued_ += lines.size();
    if (!has_queue()) {
      for (const auto& l : lines) {
        input_ += l + "\n";
        messages_.push_back(l);
      }
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
    // An http worker also drains the (empty) pg queue: --http comes with a queue source.
    std::vector<std::string> a{"worker", "--source", kind_ == "http" ? "pg" : kind_, "--campaign", campaign_,
                               "--database-url", db_.url(), "--concurrency", std::to_string(concurrency),
                               "--batch", std::to_string(batch)};
    if (redis_) a.insert(a.end(), {"--redis-url", redis_url(), "--stream", k_stream, "--claim-idle-ms", "1000"});
    if (kind_ == "http") a.insert(a.end(), {"--http", "127.0.0.1:0"});
    a.insert(a.end(), extra_args_.begin(), extra_args_.end());
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }

  // Starts one worker on the source (stdin: fed the messages given so far;
  // http: a client thread starts posting them once the worker listens).
  void start(int concurrency, int batch) {
    if (pid_ > 0) throw std::logic_error("a worker of this queue is running already");
    remove_files();
    err_path_ = temp_path("worker-err");
    if (kind_ == "stdin") {
      in_path_ = temp_path("worker-in");
      out_path_ = temp_path("worker-out");
      std::ofstream{in_path_, std::ios::binary} << input_;
      pid_ = spawn_with_input(worker_args(concurrency, batch), in_path_, out_path_, err_path_);
      return;
    }
    pid_ = spawn_voucherd(worker_args(concurrency, batch), {}, err_path_);
    if (kind_ != "http") return;
    const auto port = wait_for_http_port(err_path_, pid_, std::chrono::seconds{30});
    if (!port) throw std::runtime_error("the http worker does not listen: " + read_file(err_path_));
    replies_.clear();
    stop_posting_ = false;
    poster_ = std::thread{[this, port = *port] {
      for (const auto& m : messages_) {
        if (stop_posting_) return;
        auto reply = post_claim(port, m);
        const std::lock_guard lock{replies_mutex_};
        replies_.push_back(std::move(reply));
      }
    }};
  }

  // How many messages have their outcome: a line printed (stdin), an answer
  // (http), an outcome recorded (queues).
  std::int64_t answered() const {
    if (kind_ == "stdin") return static_cast<std::int64_t>(lines_of(read_file(out_path_)).size());
    if (kind_ == "http") {
      const std::lock_guard lock{replies_mutex_};
      return static_cast<std::int64_t>(replies_.size());
    }
    if (kind_ == "pg") return db_.count("SELECT count(*) FROM message_queue WHERE done_at IS NOT NULL");
    return db_.count("SELECT count(*) FROM message_outcome");
  }

  // Whether every message has its outcome, or the worker ended without.
  bool all_answered() const {
    return answered() >= static_cast<std::int64_t>(enqueued_) || (pid_ > 0 && !still_running(pid_));
  }

  // Ends the worker: stdin waits for it to end at the end of its input; the
  // others get SIGTERM. Returns its exit status (-1: it did not end in time
  // and was killed); its log goes to `log`.
  int stop(std::string* log = nullptr) {
    if (pid_ <= 0) return -1;
    stop_posting_ = true;
    int code = -1;
    if (kind_ == "stdin") {
      code = exit_within(pid_, std::chrono::seconds{60}).value_or(-1);
    } else {
      code = terminate_and_wait(pid_, std::chrono::seconds{15});
      if (poster_.joinable()) poster_.join();
    }
    pid_ = -1;
    if (log) *log = read_file(err_path_);
    return code;
  }

  // Runs one worker until every enqueued message is answered (or it ends),
  // then stops it. Returns the outcomes in enqueue order ({} when not all
  // were answered within 120 s); `exit_code` gets the worker's status.
  std::vector<recorded_outcome> drain(int concurrency, int batch, int* exit_code, std::string* log = nullptr) {
    start(concurrency, batch);
    const bool all = wait_until([&] { return all_answered(); }, std::chrono::seconds{120});
    *exit_code = stop(log);
    if (!all) return {};
    return outcomes();
  }

  // The outcomes so far, in enqueue order.
  std::vector<recorded_outcome> outcomes() const {
    std::vector<recorded_outcome> out;
    if (kind_ == "stdin") {
      for (const auto& line : lines_of(read_file(out_path_)))
        out.push_back({json_field(line, "status"), json_field(line, "reason"), json_field(line, "voucher_id"),
                       json_field(line, "user_id")});
      return out;
    }
    if (kind_ == "http") {
      const std::lock_guard lock{replies_mutex_};
      for (const auto& r : replies_) {
        recorded_outcome o{json_field(r.body, "status"), json_field(r.body, "reason"),
                           json_field(r.body, "voucher_id"), json_field(r.body, "user_id"), r.status};
        if (o.status.empty() && (r.status == 400 || r.status == 413)) o.status = "rejected";
        if (o.status.empty()) o.status = fmt::format("(HTTP {}: {}{})", r.status, r.body, r.error);
        out.push_back(std::move(o));
      }
      return out;
    }
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

  // The users whose messages the source has acknowledged so far, as someone
  // outside the worker sees it: the outcome lines printed (stdin), the
  // answers received (http), the queue rows marked done (pg; in the claim's
  // own transaction), the entries no longer pending (redis: XACK).
  std::vector<std::string> acknowledged_users() const {
    std::vector<std::string> users;
    if (kind_ == "stdin") {
      for (const auto& line : lines_of(read_file(out_path_))) users.push_back(json_field(line, "user_id"));
    } else if (kind_ == "http") {
      const std::lock_guard lock{replies_mutex_};
      for (const auto& r : replies_) users.push_back(json_field(r.body, "user_id"));
    } else if (kind_ == "pg") {
      auto conn = db_.connect();
      pqxx::nontransaction tx{*conn};
      for (const auto& r : tx.exec("SELECT convert_from(body, 'UTF8') FROM message_queue WHERE done_at IS NOT NULL"))
        users.push_back(json_field(r[0].c_str(), "user_id"));
    } else {
      for (const auto& body : redis_acknowledged_bodies(*redis_, k_stream, k_group))
        users.push_back(json_field(body, "user_id"));
    }
    return users;
  }

  static constexpr const char* k_stream = "vd:test";
  static constexpr const char* k_group = "voucherd";  // the worker's default consumer group

 private:
  void remove_files() {
    std::error_code ec;
    for (const auto* p : {&in_path_, &out_path_, &err_path_})
      if (!p->empty()) std::filesystem::remove(*p, ec);
  }

  std::string kind_;
  std::string campaign_;
  std::vector<std::string> extra_args_;  // every worker of this queue gets them
  test_database db_;
  std::unique_ptr<redis_server> redis_;
  std::string input_;                  // stdin: the worker's input
  std::vector<std::string> messages_;  // stdin, http: the messages, in order
  std::size_t enqueued_ = 0;
  // The running worker.
  int pid_ = -1;
  std::string in_path_, out_path_, err_path_;
  std::thread poster_;  // http: posts messages_ in order
  std::atomic<bool> stop_posting_{false};
  mutable std::mutex replies_mutex_;
  std::vector<http_reply> replies_;  // http: the answers so far, in order
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

// Every message source the worker has.
inline const std::vector<std::string>& all_sources() {
  static const std::vector<std::string> k{"stdin", "pg", "pg-general", "redis", "http"};
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
