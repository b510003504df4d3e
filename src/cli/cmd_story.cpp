// story: the README's first command. Replays the story of SPEC section 1 on
// the configured database, first through the daemon: a campaign with two
// codes, employees 1 and 2 imported at the same moment as two messages on the
// Postgres queue, two `voucherd worker` processes consuming it, their
// notifications delivered by the log sink. Then the same two employees and
// codes under the story's broken designs, `naive` and `redlock-delay`, as two
// race-lab pods that read the first free voucher, work a little, then write
// it. It ends with one table: per strategy, who owns which code and who was
// told which.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <thread>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "bench/race_lab.hpp"
#include "cli/commands.hpp"
#include "common/failure.hpp"
#include "db/migrator.hpp"
#include "db/session.hpp"
#include "redis/redis_server.hpp"
#include "pool/campaign.hpp"
#include "pool/code_import.hpp"
#include "source/pg_queue_source.hpp"
#include "sql_catalog.hpp"

extern char** environ;

namespace voucherd::cli {

namespace {

const std::vector<std::string> k_story_codes{"BV1LN2KJ", "ASXKKQRG"};
const std::vector<std::string> k_story_users{"1", "2"};
constexpr int k_own_redis_nodes = 3;

struct story_row {
  std::string strategy;
  std::string user;
  std::string owns;  // "-" for nothing
  std::string told;  // "-" for nothing; several codes comma-separated
  bool ok() const { return owns == told && owns != "-"; }
};

void add_rows(pqxx::connection& conn, const std::string& strategy, const std::string& campaign,
              std::vector<story_row>& rows) {
  pqxx::read_transaction txn{conn};
  std::string users;
  for (const auto& u : k_story_users) users += (users.empty() ? "" : "\n") + u;
  for (const auto& r : exec(txn, sql::story_table, campaign, users))
    rows.push_back({strategy, r["user_id"].c_str(), r["owns"].is_null() ? "-" : r["owns"].c_str(),
                    r["told"].is_null() ? "-" : r["told"].c_str()});
}

void print_table(const std::vector<story_row>& rows) {
  std::string out = "\n| strategy      | user | owns     | was told | ok |\n"
                    "|---------------|------|----------|----------|----|\n";
  for (const auto& r : rows)
    out += fmt::format("| {:<13} | {:<4} | {:<8} | {:<8} | {:<2} |\n", r.strategy, r.user, r.owns, r.told,
                       r.ok() ? "ok" : "NO");
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
}

// What happened under one strategy, in words, from its rows.
std::string verdict(const std::vector<story_row>& rows, const std::string& strategy) {
  std::string wrong;
  for (const auto& r : rows) {
    if (r.strategy != strategy || r.ok()) continue;
    std::string holder = "nobody";
    for (const auto& other : rows)
      if (other.strategy == strategy && other.owns == r.told && other.user != r.user) holder = "user " + other.user;
    if (!wrong.empty()) wrong += "; ";
    wrong += r.told == "-" ? fmt::format("user {} was never told a code", r.user)
                           : fmt::format("user {} was told {}, which {} owns", r.user, r.told, holder);
    if (r.owns == "-") wrong += fmt::format(", and user {} owns nothing", r.user);
  }
  if (!wrong.empty()) return fmt::format("{}: {}", strategy, wrong);
  return strategy == "skip-locked"
             ? fmt::format("{}: each employee owns the code they were told", strategy)
             : fmt::format("{}: each employee owns the code they were told; the race did not hit this run "
                           "(`voucherd bench --compare` runs it thousands of times)", strategy);
}

pid_t spawn(const std::vector<std::string>& argv) {
  std::vector<char*> raw;
  for (const auto& s : argv) raw.push_back(const_cast<char*>(s.c_str()));
  raw.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, raw[0], nullptr, nullptr, raw.data(), environ) != 0)
    throw voucherd_error{failure_kind::internal, "cannot start a worker process"};
  return pid;
}

// The story as voucherd runs it: two messages on the Postgres queue, two
// worker daemons, the log sink. Returns the campaign's name.
std::string story_through_daemon(db_session& db, const std::string& url) {
  const auto stamp = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
  const std::string campaign = fmt::format("signup-{}", stamp);
  create_campaign(db.conn(), {campaign, "", ""});
  import_codes(db.conn(), campaign, k_story_codes);
  say(fmt::format("campaign {} has codes {} and {}; employees 1 and 2 are imported at the same moment: two "
                  "messages on the Postgres queue, two worker daemons, notifications through the log sink "
                  "(on stderr)", campaign, k_story_codes[0], k_story_codes[1]));
  const auto ids = enqueue_messages(
      db.conn(), {fmt::format(R"({{"user_id":"1","campaign":"{}"}})", campaign),
                  fmt::format(R"({{"user_id":"2","campaign":"{}"}})", campaign)});

  const auto exe = self_executable();
  std::vector<pid_t> workers;
  for (int i = 0; i < 2; ++i) {
    std::vector<std::string> argv{exe, "worker", "--source", "pg", "--concurrency", "1", "--notify", "log"};
    if (!url.empty()) argv.insert(argv.end(), {"--database-url", url});
    workers.push_back(spawn(argv));
  }
  // Wait until both messages are done and both owners notified (or give up
  // after k_story_timeout and show what happened).
  constexpr auto k_story_timeout = std::chrono::seconds{30};
  const auto deadline = std::chrono::steady_clock::now() + k_story_timeout;
  const auto id_list = fmt::format("{{{},{}}}", ids[0], ids[1]);
  for (;;) {
    pqxx::read_transaction progress{db.conn()};
    const auto row = exec(progress, sql::worker_story_progress, campaign, id_list)[0];
    if (row["pending"].as<int>() == 0 && row["unsent"].as<int>() == 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      say("the workers did not finish in time; showing what happened so far");
      break;
    }
    progress.commit();
    std::this_thread::sleep_for(std::chrono::milliseconds{100});
  }
  for (pid_t pid : workers) kill(pid, SIGTERM);
  for (pid_t pid : workers) {
    int status = 0;
    waitpid(pid, &status, 0);
  }
  return campaign;
}

}  // namespace

int run_story(const args& a) {
  common_flags url_flag;
  std::string redis_nodes;
  long work_ms = 100, delay_ms = 5;
  po::options_description desc{
      "voucherd story: replay the story on this database, through the daemon, then under the story's "
      "broken designs (naive, redlock-delay) for comparison"};
  add_common(desc, url_flag);
  desc.add_options()
      ("work-ms", po::value(&work_ms)->default_value(work_ms),
       "naive/redlock-delay: time between reading the first free voucher and writing it")
      ("release-delay-ms", po::value(&delay_ms)->default_value(delay_ms), "redlock-delay: hold the lock this long after the write")
      ("redis-nodes", po::value(&redis_nodes),
       "Redlock nodes redis://host:port,... for redlock-delay; default: start 3 throwaway redis-servers");
  po::variables_map vm;
  if (!parse(a, "voucherd story [--work-ms W] [--release-delay-ms D] [--redis-nodes URLS]", desc, {}, vm))
    return k_exit_ok;
  if (work_ms < 0 || delay_ms < 0)
    throw voucherd_error{failure_kind::usage, "--work-ms and --release-delay-ms must be >= 0"};
  const auto url = resolve_common(url_flag, "story", db_profile::maintenance).database_url;
  auto nodes = parse_redis_nodes(redis_nodes);
  db_session db{url};
  apply_migrations(db.conn(), embedded_migrations());

  std::vector<story_row> rows;
  add_rows(db.conn(), "skip-locked", story_through_daemon(db, url), rows);

  say(fmt::format("now the same two employees and codes under the story's broken designs: two pods each read "
                  "the first free voucher, work {} ms, then write it (redlock-delay: under a Redlock on that "
                  "voucher's id, released {} ms after the write)", work_ms, delay_ms));
  std::vector<std::unique_ptr<redis_server>> own_redis;
  std::vector<std::string> strategies{"naive", "redlock-delay"};
  if (nodes.empty()) {
    try {
      own_redis = start_redis_servers(k_own_redis_nodes);
      nodes = endpoints_of(own_redis);
    } catch (const voucherd_error& e) {
      // A machine without redis-server (the runtime image) still gets naive.
      say(fmt::format("redlock-delay left out: {} (install redis-server or pass --redis-nodes)", e.what()));
      strategies.pop_back();
    }
  }
  const auto exe = self_executable();
  for (const auto& strategy : strategies) {
    bench::bench_config c;
    c.strategy = strategy;
    c.pods = 2;
    c.messages = static_cast<std::int64_t>(k_story_users.size());
    c.vouchers = static_cast<std::int64_t>(k_story_codes.size());
    c.codes = k_story_codes;
    c.work = std::chrono::milliseconds{work_ms};
    c.release_delay = std::chrono::milliseconds{delay_ms};
    c.redis_nodes = nodes;
    c.database_url = url;
    const auto report = bench::run_bench(c, exe);
    add_rows(db.conn(), strategy, report.campaign, rows);
  }

  print_table(rows);
  say(verdict(rows, "skip-locked"));
  for (const auto& strategy : strategies) say(verdict(rows, strategy));
  return k_exit_ok;
}

}  // namespace voucherd::cli
