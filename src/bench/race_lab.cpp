#include "bench/race_lab.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <thread>

#include <boost/json/parse.hpp>
#include <fmt/format.h>
#include <pqxx/pqxx>

#include "bench/bench_pod.hpp"
#include "bench/claim_strategy.hpp"
#include "common/failure.hpp"
#include "db/migrator.hpp"
#include "db/session.hpp"
#include "pool/campaign.hpp"
#include "pool/code_import.hpp"
#include "sql_catalog.hpp"

extern char** environ;

namespace voucherd::bench {

namespace {

void progress(const std::string& message) { std::fprintf(stderr, "voucherd bench: %s\n", message.c_str()); }

// A pipe whose ends sit above the standard descriptors and k_ready_fd, close
// on exec: a child sees only the ends dup2'ed onto its 0 and 3.
struct pipe_fds {
  int read = -1;
  int write = -1;
};

pipe_fds make_pipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw voucherd_error{failure_kind::internal, "pipe2 failed"};
  pipe_fds p{fcntl(fds[0], F_DUPFD_CLOEXEC, 10), fcntl(fds[1], F_DUPFD_CLOEXEC, 10)};
  close(fds[0]);
  close(fds[1]);
  return p;
}

void close_fd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

std::string campaign_name(const bench_config& c) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch()).count();
  return fmt::format("bench-{}-{}-{}", c.strategy, ms, getpid());
}

std::vector<std::string> pod_argv(const bench_config& c, const std::string& exe, const std::string& campaign,
                                  int pod, const std::string& record) {
  std::vector<std::string> argv{exe, "bench-pod",
                                "--strategy", c.strategy,
                                "--campaign", campaign,
                                "--pod", std::to_string(pod),
                                "--pods", std::to_string(c.pods),
                                "--messages", std::to_string(c.messages),
                                "--record", record,
                                "--work-ms", std::to_string(c.work.count()),
                                "--jitter-ms", std::to_string(c.jitter.count()),
                                "--lock-ttl-ms", std::to_string(c.lock_ttl.count()),
                                "--release-delay-ms", std::to_string(c.release_delay.count()),
                                "--seed", std::to_string(c.seed * 1000 + static_cast<std::uint64_t>(pod))};
  if (!c.redis_nodes.empty()) argv.insert(argv.end(), {"--redis-nodes", to_string(c.redis_nodes)});
  if (pod == 0 && c.pause.count() > 0) argv.insert(argv.end(), {"--pause-at", std::to_string(k_pause_at_claim)});
  return argv;
}

// The pods' environment: ours, with the database URL (which may hold a
// password) in DATABASE_URL rather than on their command lines, where any
// user's `ps` would show it.
std::vector<std::string> pod_environment(const bench_config& c) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string_view kv{*e};
    if (!c.database_url.empty() && (kv.starts_with("DATABASE_URL=") || kv.starts_with("VOUCHERD_DATABASE_URL_FILE=")))
      continue;
    env.emplace_back(kv);
  }
  if (!c.database_url.empty()) env.push_back("DATABASE_URL=" + c.database_url);
  return env;
}

// Pods share one process group (the first pod's pid), so that waiting on the
// group sees only pods, never the redis-servers this process may own.
pid_t spawn_pod(std::vector<std::string> argv, std::vector<std::string> env, int start_fd, int ready_fd, pid_t group) {
  std::vector<char*> raw;
  for (auto& s : argv) raw.push_back(s.data());
  raw.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, start_fd, STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, ready_fd, k_ready_fd);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, group);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, raw[0], &actions, &attr, raw.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw voucherd_error{failure_kind::internal, "cannot start a bench pod"};
  return pid;
}

// Waits for every pod to exit; a pod that stops itself (the pause) is left
// frozen for `pause`, then continued. Returns the number of pods that failed.
int wait_for_pods(std::vector<pid_t> pods, std::chrono::milliseconds pause) {
  int failed = 0;
  const pid_t group = pods.front();
  while (!pods.empty()) {
    int status = 0;
    const pid_t pid = waitpid(-group, &status, WUNTRACED);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    const auto it = std::find(pods.begin(), pods.end(), pid);
    if (it == pods.end()) continue;
    if (WIFSTOPPED(status)) {
      progress(fmt::format("pod {} froze right before its write (holding its lock); SIGCONT in {} ms",
                           pid, pause.count()));
      // The pause itself is the experiment, not a synchronisation.
      std::this_thread::sleep_for(pause);
      kill(pid, SIGCONT);
      continue;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      ++failed;
      progress(fmt::format("pod {} ended with status {}", pid, status));
    }
    pods.erase(it);
  }
  return failed;
}

struct told {
  std::string status;
  std::string code;
};

struct records {
  std::map<std::string, std::vector<told>> by_user;
  std::vector<double> latencies_ms;
};

records read_records(const std::vector<std::string>& paths) {
  records out;
  for (const auto& path : paths) {
    std::ifstream in{path};
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      const auto v = boost::json::parse(line).as_object();
      told t;
      t.status = std::string(v.at("status").as_string());
      if (const auto* code = v.if_contains("code")) t.code = std::string(code->as_string());
      out.by_user[std::string(v.at("user").as_string())].push_back(t);
      out.latencies_ms.push_back(v.at("ms").to_number<double>());
    }
  }
  return out;
}

double percentile(std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

bool owns(const std::string& status) { return status == "claimed" || status == "already_claimed"; }

void audit(bench_report& r, const records& rec, pqxx::connection& conn, const std::string& campaign) {
  std::map<std::string, std::string> owner_of_code;
  std::map<std::string, std::vector<std::string>> codes_of_user;
  std::int64_t repeated_notifications = 0;
  {
    pqxx::read_transaction txn{conn};
    for (const auto& row : exec(txn, sql::bench_owners, campaign)) {
      owner_of_code[row["code"].as<std::string>()] = row["user_id"].as<std::string>();
      codes_of_user[row["user_id"].as<std::string>()].push_back(row["code"].as<std::string>());
    }
    repeated_notifications = static_cast<std::int64_t>(exec(txn, sql::bench_outbox_repeats, campaign).size());
  }
  for (const auto& [user, told_list] : rec.by_user) {
    for (const auto& t : told_list) {
      if (owns(t.status)) {
        ++r.claimed;
        const auto it = owner_of_code.find(t.code);
        if (it == owner_of_code.end() || it->second != user) ++r.notified_not_owner;
      }
      if (t.status == "sold_out") ++r.sold_out;
    }
  }
  for (const auto& [user, codes] : codes_of_user) {
    if (codes.size() > 1) ++r.users_with_multiple_vouchers;
    const auto it = rec.by_user.find(user);
    for (const auto& code : codes) {
      const bool was_told = it != rec.by_user.end() &&
                            std::any_of(it->second.begin(), it->second.end(),
                                        [&](const told& t) { return owns(t.status) && t.code == code; });
      if (!was_told) ++r.owners_not_notified;
    }
  }
  for (std::int64_t n = 0; n < r.config.messages; ++n) {
    const auto it = rec.by_user.find(bench_user(n));
    const bool has_outcome = it != rec.by_user.end() &&
                             std::any_of(it->second.begin(), it->second.end(),
                                         [](const told& t) { return t.status != "error"; });
    if (!has_outcome) ++r.lost_messages;
  }
  r.double_notified = repeated_notifications;
}

}  // namespace

void bench_config::validate() const {
  const auto& names = strategy_names();
  if (std::find(names.begin(), names.end(), strategy) == names.end())
    throw voucherd_error{failure_kind::usage, fmt::format("unknown strategy '{}'", strategy)};
  if (pods < 1 || pods > 64) throw voucherd_error{failure_kind::usage, "--pods must be 1..64"};
  if (messages < 1) throw voucherd_error{failure_kind::usage, "--messages must be at least 1"};
  if (vouchers < 1) throw voucherd_error{failure_kind::usage, "--vouchers must be at least 1"};
  if (!codes.empty() && static_cast<std::int64_t>(codes.size()) != vouchers)
    throw voucherd_error{failure_kind::usage, "the given codes and --vouchers disagree"};
  if (work.count() < 0 || jitter.count() < 0 || pause.count() < 0 || release_delay.count() < 0)
    throw voucherd_error{failure_kind::usage, "--work-ms, --jitter-ms, --pause-ms, --release-delay-ms must be >= 0"};
  if (lock_ttl.count() < 10) throw voucherd_error{failure_kind::usage, "--lock-ttl-ms must be at least 10"};
  if (strategy_uses_redis(strategy) && redis_nodes.empty())
    throw voucherd_error{failure_kind::usage, fmt::format("strategy {} needs Redis nodes", strategy)};
}

std::string bench_report::label() const {
  return config.pause.count() > 0 ? config.strategy + " + pause" : config.strategy;
}

std::string to_json_line(const bench_report& r) {
  // Written by hand rather than with Boost.JSON, whose doubles come out as
  // 1.2E-1: the report is read by people and by scripts/compare's grep.
  return fmt::format(
      R"({{"strategy":"{}","pods":{},"messages":{},"vouchers":{},"work_ms":{},"jitter_ms":{},"lock_ttl_ms":{},)"
      R"("pause_ms":{},"elapsed_s":{:.3f},"claims_per_s":{:.1f},"latency_p50_ms":{:.2f},"latency_p99_ms":{:.2f},)"
      R"("claimed":{},"sold_out":{},"notified_not_owner":{},"users_with_multiple_vouchers":{},)"
      R"("owners_not_notified":{},"lost_messages":{},"double_notified":{},"violations":{}}})",
      r.config.strategy, r.config.pods, r.config.messages, r.config.vouchers, r.config.work.count(),
      r.config.jitter.count(), r.config.lock_ttl.count(), r.config.pause.count(), r.elapsed_s, r.claims_per_s,
      r.latency_p50_ms, r.latency_p99_ms, r.claimed, r.sold_out, r.notified_not_owner,
      r.users_with_multiple_vouchers, r.owners_not_notified, r.lost_messages, r.double_notified, r.violations());
}

bench_report run_bench(const bench_config& c, const std::string& self_exe) {
  c.validate();
  bench_report report;
  report.config = c;
  db_session db{c.database_url};
  apply_migrations(db.conn(), embedded_migrations());
  const auto campaign = campaign_name(c);
  create_campaign(db.conn(), {campaign, "", ""});
  if (c.codes.empty()) {
    generate_codes(db.conn(), campaign, c.vouchers, k_bench_code_length);
  } else {
    import_codes(db.conn(), campaign, c.codes);
  }
  report.campaign = campaign;

  char dir_template[] = "/tmp/voucherd-bench.XXXXXX";
  if (!mkdtemp(dir_template)) throw voucherd_error{failure_kind::internal, "cannot create a record directory"};
  const std::filesystem::path dir{dir_template};
  progress(fmt::format("{}: {} pods, {} messages, {} vouchers, work {}±{} ms, campaign {}", report.label(), c.pods,
                       c.messages, c.vouchers, c.work.count(), c.jitter.count(), campaign));

  auto start = make_pipe();
  auto ready = make_pipe();
  std::vector<pid_t> pods;
  std::vector<std::string> paths;
  for (int i = 0; i < c.pods; ++i) {
    paths.push_back((dir / fmt::format("pod-{}.jsonl", i)).string());
    pods.push_back(spawn_pod(pod_argv(c, self_exe, campaign, i, paths.back()), pod_environment(c), start.read, ready.write,
                             pods.empty() ? 0 : pods.front()));
  }
  close_fd(start.read);
  close_fd(ready.write);
  // Every pod writes one byte once connected; EOF earlier means some died.
  int ready_count = 0;
  char buf[64];
  while (ready_count < c.pods) {
    const ssize_t n = read(ready.read, buf, sizeof buf);
    if (n > 0) ready_count += static_cast<int>(n);
    else if (n == 0 || errno != EINTR) break;
  }
  close_fd(ready.read);
  const auto t0 = std::chrono::steady_clock::now();
  close_fd(start.write);
  const int failed = wait_for_pods(pods, c.pause);
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - t0;
  if (ready_count < c.pods || failed > 0)
    progress(fmt::format("{} of {} pods became ready, {} failed", ready_count, c.pods, failed));

  auto rec = read_records(paths);
  std::filesystem::remove_all(dir);
  report.elapsed_s = elapsed.count();
  std::int64_t outcomes = 0;
  for (const auto& [user, list] : rec.by_user) outcomes += static_cast<std::int64_t>(list.size());
  report.claims_per_s = report.elapsed_s > 0 ? static_cast<double>(outcomes) / report.elapsed_s : 0;
  std::sort(rec.latencies_ms.begin(), rec.latencies_ms.end());
  report.latency_p50_ms = percentile(rec.latencies_ms, 0.50);
  report.latency_p99_ms = percentile(rec.latencies_ms, 0.99);
  audit(report, rec, db.conn(), campaign);
  progress(fmt::format("{}: {:.2f} s, {} violation{}", report.label(), report.elapsed_s, report.violations(),
                       report.violations() == 1 ? "" : "s"));
  return report;
}

std::string markdown_table(const std::vector<bench_report>& reports) {
  std::string out =
      "| strategy | pods | claims/s | p50 ms | p99 ms | notified_not_owner | users_with_multiple_vouchers | "
      "owners_not_notified | lost_messages | double_notified |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : reports)
    out += fmt::format("| {} | {} | {:.0f} | {:.1f} | {:.1f} | {} | {} | {} | {} | {} |\n", r.label(), r.config.pods,
                       r.claims_per_s, r.latency_p50_ms, r.latency_p99_ms, r.notified_not_owner,
                       r.users_with_multiple_vouchers, r.owners_not_notified, r.lost_messages, r.double_notified);
  return out;
}

}  // namespace voucherd::bench
