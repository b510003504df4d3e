// The worker under faults and load (slow): thousands of messages, several
// worker processes, one killed with SIGKILL and restarted, Postgres restarted
// mid-run (and, for the Redis stream, Redis restarted with its data),
// SIGTERM under load. Afterwards every message has exactly one
// outcome and I1-I3 hold, audited by SQL.
#include <doctest/doctest.h>

#include "worker_fixture.hpp"

using namespace voucherd;
using namespace voucherd::test;

namespace {

constexpr const char* k_campaign = "race";
constexpr int k_users = 20000;

// 20,000 messages for distinct users with a bad one after every ten
// (malformed JSON, no user id, 100 kB user id, unknown campaign, not UTF-8),
// the bad kind picked by a seeded generator.
std::vector<std::string> messages_with_bad(int users, std::uint64_t seed, int* bad_count) {
  std::mt19937_64 rng{seed};
  const std::vector<std::string> bad{
      "{\"user_id\": oops", R"({"campaign":"race"})", fmt::format(R"({{"user_id":"{}"}})", std::string(100 * 1024, 'z')),
      R"({"user_id":"x","campaign":"gone"})", "{\"user_id\":\"\xc3\x28\"}"};
  std::vector<std::string> out;
  *bad_count = 0;
  for (int u = 1; u <= users; ++u) {
    out.push_back(fmt::format(R"({{"user_id":"user-{}"}})", u));
    if (u % 10 == 0) {
      out.push_back(bad[rng() % bad.size()]);
      ++*bad_count;
    }
  }
  return out;
}

struct worker_process {
  int pid = -1;
  std::string err_path;
};

// threads: for the pg queue, how many threads the claimers run on (0 = the
// default); other sources always run on one.
worker_process start_worker(queue_under_test& q, int concurrency, int batch, const std::string& consumer,
                            int threads = 0) {
  worker_process w;
  w.err_path = temp_path("worker-" + consumer);
  std::vector<std::string> extra{"--consumer", consumer};
  if (q.kind() == "pg") extra.insert(extra.end(), {"--threads", std::to_string(threads)});
  w.pid = spawn_voucherd(q.worker_args(concurrency, batch, extra), {}, w.err_path);
  return w;
}

void check_audit(queue_under_test& q) {
  auto conn = q.db().connect();
  const auto problems = audit_campaign(*conn, k_campaign);
  CHECK_MESSAGE(problems.empty(), problems.size() << " I1-I3 violations, first: "
                                                  << (problems.empty() ? "" : problems.front()));
}

// 3 workers; the first SIGKILLed at a quarter and restarted; Postgres
// restarted at a half. On the pg queue, w0 runs its claimers on one thread,
// w1 on the default, w2 on four. Returns the logs of every worker.
std::string run_with_faults(queue_under_test& q, private_postgres& pg, std::size_t total) {
  std::vector<worker_process> workers{start_worker(q, 4, 1, "w0", 1), start_worker(q, 4, 10, "w1"),
                                      start_worker(q, 4, 1, "w2", 4)};
  const auto quarter = static_cast<std::int64_t>(total / 4), half = static_cast<std::int64_t>(total / 2);
  CHECK_MESSAGE(wait_until([&] { return q.answered() >= quarter; }, std::chrono::seconds{120}),
                "a quarter answered before the kill");
  ::kill(workers[0].pid, SIGKILL);
  CHECK_MESSAGE(wait_exit(workers[0].pid) == 128 + SIGKILL, "worker w0 died of SIGKILL");
  const auto at_kill = q.answered();
  CHECK_MESSAGE(at_kill < static_cast<std::int64_t>(total), "the kill came mid-run: " << at_kill);
  workers.push_back(start_worker(q, 4, 1, "w0-restarted"));

  CHECK_MESSAGE(wait_until([&] { return q.answered() >= half; }, std::chrono::seconds{120}),
                "half answered before the Postgres restart");
  pg.restart();
  const auto at_restart = q.answered();
  CHECK_MESSAGE(at_restart < static_cast<std::int64_t>(total), "the restart came mid-run: " << at_restart);

  if (q.kind() == "redis") {
    // The queue's own server goes away and comes back with its data: the
    // stream, the group and every consumer's pending entries.
    const auto three_quarters = static_cast<std::int64_t>(total * 3 / 4);
    CHECK_MESSAGE(wait_until([&] {
      try {
        return q.answered() >= three_quarters;
      } catch (const std::exception&) {
        return false;  // Postgres may still be coming back
      }
    }, std::chrono::seconds{300}), "three quarters answered before the Redis restart");
    // Down until every live worker has noticed (said so in its log).
    std::vector<std::size_t> log_before;
    for (const auto& w : workers) log_before.push_back(read_file(w.err_path).size());
    q.redis()->stop();
    const bool noticed = wait_until([&] {
      for (std::size_t i = 1; i < workers.size(); ++i)
        if (read_file(workers[i].err_path).find("redis unavailable", log_before[i]) == std::string::npos) return false;
      return true;
    }, std::chrono::seconds{60});
    CHECK_MESSAGE(noticed, "every live worker said 'redis unavailable' within 60 s of the Redis stop");
    q.redis()->restart();
    CHECK_MESSAGE(q.answered() < static_cast<std::int64_t>(total), "the Redis restart came mid-run");
  }
  const bool all = wait_until([&] {
    try {
      return q.answered() >= static_cast<std::int64_t>(total);
    } catch (const std::exception&) {
      return false;  // the server is still coming back
    }
  }, std::chrono::seconds{300});
  CHECK_MESSAGE(all, "every message answered: " << q.answered() << "/" << total);
  std::string logs;
  for (std::size_t i = 1; i < workers.size(); ++i) {
    CHECK_MESSAGE(still_running(workers[i].pid), "worker " << i << " survived the database restart");
    double took = 0;
    CHECK_MESSAGE(terminate_and_wait(workers[i].pid, std::chrono::seconds{10}, &took) == 0,
                  "worker " << i << " exits 0 on SIGTERM within 10 s");
  }
  for (const auto& w : workers) {
    logs += read_file(w.err_path);
    std::filesystem::remove(w.err_path);
  }
  return logs;
}

}  // namespace

TEST_CASE("pg queue: 20,000 users, 3 workers, one SIGKILLed and restarted, Postgres restarted: one outcome per message") {
  private_postgres pg;
  queue_under_test q{"pg", k_campaign, k_users + 5000};
  int bad = 0;
  const auto lines = messages_with_bad(k_users, 42, &bad);
  q.enqueue(lines);
  const auto logs = run_with_faults(q, pg, lines.size());

  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM message_queue WHERE done_at IS NULL") == 0, "no message left pending");
  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM message_queue") == static_cast<std::int64_t>(lines.size()),
                "the queue holds each message once");
  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM message_queue WHERE status = 'claimed'") == k_users,
                "each user's message is recorded claimed exactly once");
  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM message_queue WHERE status = 'rejected'") == bad,
                "each bad message is recorded rejected");
  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == k_users, "20,000 claims");
  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM dead_letter") == bad, "each bad message dead-lettered once");
  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM message_queue q JOIN voucher_item v ON v.id = q.voucher_id "
                             "WHERE q.status = 'claimed' AND q.body <> convert_to(format('{\"user_id\":\"%s\"}', v.user_id), 'UTF8')") == 0,
                "each claimed row names the voucher its own user owns");
  const bool noticed = logs.find("database connection lost") != std::string::npos ||
                       logs.find("cannot connect to the database") != std::string::npos;
  CHECK_MESSAGE(noticed, "the workers noticed the restart and said so");
  check_audit(q);
}

TEST_CASE("redis stream: 20,000 users with duplicate deliveries, a SIGKILLed consumer's pending messages taken over, Postgres and Redis restarted") {
  private_postgres pg;
  queue_under_test q{"redis", k_campaign, k_users + 5000};
  int bad = 0;
  auto lines = messages_with_bad(k_users, 7, &bad);
  constexpr int k_duplicates = 1000;
  for (int u = 1; u <= k_duplicates; ++u) lines.push_back(fmt::format(R"({{"user_id":"user-{}"}})", u * 13));
  q.enqueue(lines);
  REQUIRE_MESSAGE(redis_int(*q.redis(), {"XLEN", queue_under_test::k_stream}) == static_cast<std::int64_t>(lines.size()),
                  "every message is on the stream");
  const auto logs = run_with_faults(q, pg, lines.size());

  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM message_outcome") == static_cast<std::int64_t>(lines.size()),
                "one outcome per stream entry");
  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM message_outcome WHERE status = 'claimed'") == k_users,
                "each user claimed once");
  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM message_outcome WHERE status = 'already_claimed'") == k_duplicates,
                "each duplicate delivery found its user's voucher");
  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM message_outcome WHERE status = 'rejected'") == bad,
                "each bad message rejected");
  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == k_users, "20,000 claims");
  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM dead_letter") == bad, "each bad message dead-lettered once");
  CHECK_MESSAGE(logs.find("redis unavailable") != std::string::npos, "the workers noticed the Redis restart and said so");
  CHECK_MESSAGE(redis_int(*q.redis(), {"XPENDING", queue_under_test::k_stream, "voucherd"}) == 0,
                "every entry acknowledged, the killed consumer's included");
  CHECK_MESSAGE(redis_int(*q.redis(), {"XLEN", std::string{queue_under_test::k_stream} + ":dead"}) == bad,
                "bad messages copied to the dead-letter stream");
  CHECK_MESSAGE(logs.find("took over pending messages") != std::string::npos,
                "a live consumer took over the killed one's pending entries");
  check_audit(q);
}

TEST_CASE("SIGTERM (or SIGHUP) under load: the worker exits 0 within 10 s, and nothing is lost or doubled") {
  // SIGHUP: the terminal or session that started the worker went away, or a
  // log rotation's reflex. It used to end the process at once (status 129).
  const std::vector<std::pair<std::string, int>> runs{{"pg", SIGTERM}, {"redis", SIGTERM}, {"pg", SIGHUP}};
  for (const auto& [kind, signo] : runs) {
    CAPTURE(kind);
    CAPTURE(signo);
    constexpr int k_messages = 6000;
    queue_under_test q{kind, k_campaign, k_messages};
    std::vector<std::string> lines;
    for (int u = 1; u <= k_messages; ++u) lines.push_back(fmt::format(R"({{"user_id":"user-{}"}})", u));
    q.enqueue(lines);
    auto w = start_worker(q, 8, 1, "busy");
    CHECK_MESSAGE(wait_until([&] { return q.answered() >= k_messages / 4; }, std::chrono::seconds{60}), "under load");
    double took = 0;
    const int status = terminate_and_wait(w.pid, std::chrono::seconds{10}, &took, signo);
    CHECK_MESSAGE(status == 0, "exit status 0 after the signal, got " << status << ": " << read_file(w.err_path).substr(0, 2000));
    CHECK_MESSAGE(took < 10.0, "stopped within 10 s (took " << took << " s)");
    const auto answered_at_exit = q.answered();
    CHECK_MESSAGE(answered_at_exit < k_messages, "it was stopped mid-run: " << answered_at_exit);
    if (kind == "redis")
      CHECK_MESSAGE(redis_int(*q.redis(), {"XPENDING", queue_under_test::k_stream, "voucherd"}) == 0,
                    "what it read it claimed and acknowledged before exiting");
    CHECK_MESSAGE(q.db().count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == answered_at_exit,
                  "every committed claim has its recorded outcome, and no other claim exists");
    std::filesystem::remove(w.err_path);

    int exit_code = -1;
    const auto out = q.drain(4, 1, &exit_code);
    CHECK_MESSAGE(exit_code == 0, "a second worker finishes the queue");
    CHECK_MESSAGE(out.size() == static_cast<std::size_t>(k_messages), "one outcome per message");
    CHECK_MESSAGE(q.db().count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == k_messages,
                  "one claim per user: nothing lost, nothing doubled");
    check_audit(q);
  }
}

TEST_CASE("pg queue at --batch 1: each user sent four times in a row, two workers of 8 claimers: one voucher per "
          "user, and every delivery names it") {
  // The worker at --batch 1 claims with sql/queue_claim_one.sql. Four
  // messages of one user side by side are taken by four claimers at once:
  // none sees the others' uncommitted voucher, so all but one fail the owner
  // key, and the general path answers them already_claimed.
  constexpr int k_users_here = 500, k_copies = 4;
  queue_under_test q{"pg", k_campaign, k_users_here * 2};
  std::vector<std::string> lines;
  for (int u = 1; u <= k_users_here; ++u)
    for (int c = 0; c < k_copies; ++c) lines.push_back(fmt::format(R"({{"user_id":"user-{}"}})", u));
  q.enqueue(lines);
  std::vector<worker_process> workers{start_worker(q, 8, 1, "a"), start_worker(q, 8, 1, "b")};
  const bool all = wait_until([&] { return q.answered() >= static_cast<std::int64_t>(lines.size()); },
                              std::chrono::seconds{120});
  CHECK_MESSAGE(all, "every message answered: " << q.answered() << "/" << lines.size());
  std::string logs;
  for (const auto& w : workers) {
    CHECK(terminate_and_wait(w.pid, std::chrono::seconds{10}) == 0);
    logs += read_file(w.err_path);
    std::filesystem::remove(w.err_path);
  }
  CHECK(q.db().count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == k_users_here);
  CHECK(q.db().count("SELECT count(*) FROM message_queue WHERE status = 'claimed'") == k_users_here);
  CHECK(q.db().count("SELECT count(*) FROM message_queue WHERE status = 'already_claimed'") ==
        k_users_here * (k_copies - 1));
  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM message_queue q LEFT JOIN voucher_item v ON v.id = q.voucher_id "
                             "WHERE v.id IS NULL OR q.user_id IS DISTINCT FROM v.user_id") == 0,
                "every delivery names the voucher its own user owns");
  CHECK(q.db().count("SELECT count(*) FROM notification_outbox") == k_users_here);
  // What the test is for; timing decides how often it happens, so reported.
  WARN_MESSAGE(logs.find("one-statement claim failed") != std::string::npos,
               "no concurrent claim of one user failed the one-message statement this time");
  check_audit(q);
}
