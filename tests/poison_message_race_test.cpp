// Poison isolation (SPEC I8, issue 8 point 5): one message whose claim fails
// with a non-retryable database error never holds up the others. Here the
// poison is a user an operator's trigger on voucher_item refuses (RAISE
// EXCEPTION, SQLSTATE P0001), placed third among 201 messages: on every
// source (pg with --batch 1 and 100, redis, stdin, HTTP) the 200 healthy
// messages are claimed within a bounded wait while the poison is retried
// alone, and after --max-deliveries failed attempts it gets the outcome
// `rejected` with the database's message as its reason and is dead-lettered
// (pg: its queue row done as 'rejected' + a dead_letter row; redis: the
// <stream>:dead stream + a dead_letter row, acknowledged; stdin: a rejected
// outcome line; HTTP: 422). The worker keeps running throughout.
#include <doctest/doctest.h>

#include <latch>
#include <map>
#include <optional>

#include "worker_fixture.hpp"

using namespace voucherd;
using namespace voucherd::test;
using namespace std::chrono_literals;

namespace {

constexpr const char* k_campaign = "refusal";
constexpr int k_healthy = 200;
constexpr std::size_t k_poison_at = 2;  // the third message of the input
constexpr int k_max_deliveries = 3;
const std::string k_refusal = "operator refuses user poison";  // what the trigger raises
constexpr auto k_prompt = 60s;  // bounded wait for the 200 healthy messages (no timing claim)
constexpr auto k_poison_wait = 60s;  // and then for the poison's dead-lettering

// The operator's trigger: every claim for user 'poison' fails with an
// exception no retry can change.
void install_refusal(const test_database& db) {
  auto conn = db.connect();
  pqxx::nontransaction tx{*conn};
  tx.exec(R"(CREATE FUNCTION refuse_user() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'operator refuses user %', NEW.user_id USING ERRCODE = 'P0001'; END $$)");
  tx.exec("CREATE TRIGGER refuse_poison BEFORE UPDATE ON voucher_item FOR EACH ROW "
          "WHEN (NEW.user_id = 'poison') EXECUTE FUNCTION refuse_user()");
}

std::string healthy_user(int i) { return fmt::format("u{}", i); }

// 201 messages: u1, u2, poison, u3 .. u200.
std::vector<std::string> input_users() {
  std::vector<std::string> users;
  for (int u = 1; u <= k_healthy; ++u) {
    if (users.size() == k_poison_at) users.push_back("poison");
    users.push_back(healthy_user(u));
  }
  return users;
}

std::vector<std::string> input_lines(const std::string& id_prefix = {}) {
  std::vector<std::string> lines;
  for (const auto& u : input_users()) {
    if (id_prefix.empty()) lines.push_back(fmt::format(R"({{"user_id":"{}"}})", u));
    else lines.push_back(fmt::format(R"({{"user_id":"{}","message_id":"{}{}"}})", u, id_prefix, u));
  }
  return lines;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string tail(const std::string& log, std::size_t n = 3000) {
  return log.size() <= n ? log : "..." + log.substr(log.size() - n);
}

// "claimed=200 rejected=1" of a status column, for check messages.
std::string status_counts(const test_database& db, const std::string& table) {
  std::string out;
  auto conn = db.connect();
  pqxx::nontransaction tx{*conn};
  for (const auto& r : tx.exec(fmt::format(
           "SELECT coalesce(status, 'pending'), count(*) FROM {} GROUP BY 1 ORDER BY 1", table)))
    out += fmt::format("{}{}={}", out.empty() ? "" : " ", r[0].c_str(), r[1].c_str());
  return out.empty() ? "(none)" : out;
}

void check_owners_and_audit(const test_database& db) {
  CHECK_MESSAGE(db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == k_healthy,
                "each healthy user owns one voucher, got "
                    << db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL"));
  CHECK_MESSAGE(db.count("SELECT count(*) FROM voucher_item WHERE user_id = 'poison'") == 0,
                "the refused user owns nothing");
  auto conn = db.connect();
  const auto problems = audit_campaign(*conn, k_campaign);
  CHECK_MESSAGE(problems.empty(), "I1-I3 hold: " << describe(problems));
}

// The poison's failed attempts as message_queue counts them; -1 (with the
// reason in `why`) when the column is missing or unreadable.
std::int64_t queue_attempts(const test_database& db, std::string* why) {
  try {
    return db.count(fmt::format("SELECT attempts FROM message_queue ORDER BY id OFFSET {} LIMIT 1", k_poison_at));
  } catch (const std::exception& e) {
    *why = e.what();
    return -1;
  }
}

// One run of a queue source (pg, pg-general or redis) with the poison among 200.
void poison_on_queue(const std::string& kind, int batch) {
  CAPTURE(kind);
  CAPTURE(batch);
  queue_under_test q{kind, k_campaign, 300};
  install_refusal(q.db());
  q.enqueue(input_lines());
  const std::string outcome_table = q.kind() == "pg" ? "message_queue" : "message_outcome";
  auto healthy_claimed = [&] {
    return q.db().count(fmt::format("SELECT count(*) FROM {} WHERE status = 'claimed'", outcome_table));
  };

  const auto err_path = temp_path("poison-worker");
  const int pid = spawn_voucherd(
      q.worker_args(2, batch, {"--max-deliveries", std::to_string(k_max_deliveries)}), {}, err_path);
  const bool prompt = wait_until([&] { return healthy_claimed() >= k_healthy; }, k_prompt);
  const auto claimed_in_time = healthy_claimed();
  const auto statuses_in_time = status_counts(q.db(), outcome_table);
  const bool poison_answered = wait_until([&] { return q.answered() >= k_healthy + 1; }, k_poison_wait);
  const bool alive = still_running(pid);
  const int exit_code = terminate_and_wait(pid, std::chrono::seconds{15});
  const auto log = read_file(err_path);
  std::filesystem::remove(err_path);

  CHECK_MESSAGE(prompt, "all " << k_healthy << " healthy messages are claimed within " << k_prompt.count()
                               << " s despite the poison; claimed " << claimed_in_time << " (" << statuses_in_time
                               << ")\nworker log: " << tail(log));
  CHECK_MESSAGE(poison_answered, "the poison gets its outcome: " << status_counts(q.db(), outcome_table));
  CHECK_MESSAGE(alive, "the poison never ends the worker: " << tail(log));
  CHECK_MESSAGE(exit_code == 0, "SIGTERM ends the worker with 0, got " << exit_code);
  CHECK_MESSAGE(healthy_claimed() == k_healthy,
                "every healthy message ends claimed: " << status_counts(q.db(), outcome_table));

  std::string poison_status, poison_reason;
  {
    auto conn = q.db().connect();
    pqxx::nontransaction tx{*conn};
    const auto rows = q.kind() == "pg"
        ? tx.exec(fmt::format("SELECT coalesce(status, ''), coalesce(reason, '') FROM message_queue "
                              "ORDER BY id OFFSET {} LIMIT 1", k_poison_at))
        : tx.exec("SELECT status, coalesce(reason, '') FROM message_outcome WHERE user_id = 'poison'");
    CHECK_MESSAGE(rows.size() == 1, "one recorded outcome for the poison, got " << rows.size());
    if (rows.size() >= 1) {
      poison_status = rows[0][0].c_str();
      poison_reason = rows[0][1].c_str();
    }
  }
  CHECK_MESSAGE(poison_status == "rejected", "the poison is rejected, got '" << poison_status << "'");
  CHECK_MESSAGE(poison_reason.find(k_refusal) != std::string::npos,
                "its reason carries the database's message '" << k_refusal << "', got '" << poison_reason << "'");

  const auto dead = q.db().count("SELECT count(*) FROM dead_letter");
  // Dead letters name the source of their message id (migration 0006).
  const std::string source = kind == "redis" ? fmt::format("redis:{}", queue_under_test::k_stream) : q.kind();
  const auto dead_poison = q.db().count(fmt::format(
      "SELECT count(*) FROM dead_letter WHERE source = '{}' AND reason LIKE '%{}%'", source, k_refusal));
  std::string dead_reasons;
  {
    auto conn = q.db().connect();
    pqxx::nontransaction tx{*conn};
    for (const auto& r : tx.exec("SELECT source || ': ' || reason FROM dead_letter ORDER BY id LIMIT 5"))
      dead_reasons += std::string{"\n  "} + r[0].c_str();
  }
  CHECK_MESSAGE(dead_poison == 1, "the poison has one dead_letter row (source '" << source << "') with the reason;"
                                      << " dead_letter holds " << dead << " rows:" << dead_reasons);
  CHECK_MESSAGE(dead == 1, "nothing but the poison is dead-lettered: " << dead << " rows:" << dead_reasons);

  if (q.kind() == "pg") {
    std::string why;
    const auto attempts = queue_attempts(q.db(), &why);
    // Its tries alone, counted: --max-deliveries of them, or one more per
    // claimer when two claimers each saw it fail once before it was known.
    CHECK_MESSAGE((attempts >= k_max_deliveries && attempts <= k_max_deliveries + 2),
                  "message_queue.attempts of the poison counts its " << k_max_deliveries << " failed attempts, got "
                                                                     << attempts << " " << why);
  }
  if (kind == "redis") {
    const std::string dead_stream = std::string{queue_under_test::k_stream} + ":dead";
    CHECK_MESSAGE(redis_int(*q.redis(), {"XLEN", dead_stream}) == 1, "the poison alone is on " << dead_stream << ", "
                                                                     << redis_int(*q.redis(), {"XLEN", dead_stream})
                                                                     << " entries");
    // Its entry: field/value pairs, one of them the reason.
    std::string entry;
    {
      redis_node node{q.redis()->endpoint(), std::chrono::milliseconds{2000}};
      auto r = node.command({"XRANGE", dead_stream, "-", "+"});
      if (r && r->type == REDIS_REPLY_ARRAY)
        for (std::size_t e = 0; e < r->elements; ++e) {
          const auto* fields = r->element[e]->elements == 2 ? r->element[e]->element[1] : nullptr;
          if (!fields || fields->type != REDIS_REPLY_ARRAY) continue;
          for (std::size_t f = 0; f < fields->elements; ++f)
            if (fields->element[f]->type == REDIS_REPLY_STRING)
              entry += std::string{fields->element[f]->str, fields->element[f]->len} + " ";
        }
    }
    CHECK_MESSAGE(contains(entry, k_refusal), "the dead-letter entry carries the reason: " << entry);
    CHECK_MESSAGE(contains(entry, "poison"), "the dead-letter entry is the poison's: " << entry);
    CHECK_MESSAGE(redis_int(*q.redis(), {"XPENDING", queue_under_test::k_stream, "voucherd"}) == 0,
                  "every message, the poison too, is acknowledged: "
                      << redis_int(*q.redis(), {"XPENDING", queue_under_test::k_stream, "voucherd"}) << " pending");
  }
  check_owners_and_audit(q.db());
}

}  // namespace

TEST_CASE("pg source: one poisoned message among 200; the others are claimed promptly, the poison is dead-lettered") {
  SUBCASE("--batch 1") { poison_on_queue("pg", 1); }
  SUBCASE("--batch 100") { poison_on_queue("pg", 100); }
  SUBCASE("--batch 1, general path") { poison_on_queue("pg-general", 1); }
  SUBCASE("--batch 100, general path") { poison_on_queue("pg-general", 100); }
}

TEST_CASE("redis source: one poisoned message among 200; the others are claimed, the poison goes to <stream>:dead") {
  SUBCASE("--batch 1") { poison_on_queue("redis", 1); }
  SUBCASE("--batch 100") { poison_on_queue("redis", 100); }
}

TEST_CASE("stdin source: one poisoned message among 200; 201 outcome lines in order, the poison rejected with its reason") {
  queue_under_test q{"stdin", k_campaign, 300};
  install_refusal(q.db());
  const auto users = input_users();
  q.enqueue(input_lines());
  const auto in_path = temp_path("poison-in"), out_path = temp_path("poison-out"), err_path = temp_path("poison-err");
  { std::ofstream{in_path, std::ios::binary} << q.input(); }
  const int pid = spawn_with_input(q.worker_args(2, 100, {"--max-deliveries", std::to_string(k_max_deliveries)}),
                                   in_path, out_path, err_path);
  const auto exit_code = exit_within(pid, k_prompt + k_poison_wait);
  const auto out = lines_of(read_file(out_path));
  const auto log = read_file(err_path);
  for (const auto& p : {in_path, out_path, err_path}) std::filesystem::remove(p);

  CHECK_MESSAGE(exit_code.has_value(), "the worker reaches the end of its input and exits within "
                                           << (k_prompt + k_poison_wait).count() << " s; it had printed " << out.size()
                                           << " of " << users.size() << " outcome lines\nworker log: " << tail(log));
  CHECK_MESSAGE(exit_code.value_or(-1) == 0, "exit 0 at end of input, got " << exit_code.value_or(-1) << ": " << tail(log));
  CHECK_MESSAGE(out.size() == users.size(), "one outcome line per message, got " << out.size());
  int claimed = 0;
  bool in_order = true;
  std::string poison_status, poison_reason, first_out_of_order;
  for (std::size_t i = 0; i < std::min(out.size(), users.size()); ++i) {
    const auto user = json_field(out[i], "user_id");
    if (user != users[i] && in_order) {
      in_order = false;
      first_out_of_order = fmt::format("line {} is for '{}', expected '{}': {}", i, user, users[i], out[i]);
    }
    if (users[i] == "poison") {
      poison_status = json_field(out[i], "status");
      poison_reason = json_field(out[i], "reason");
    } else {
      claimed += json_field(out[i], "status") == "claimed";
    }
  }
  CHECK_MESSAGE(in_order, "outcome lines follow the input order: " << first_out_of_order);
  CHECK_MESSAGE(claimed == k_healthy, "every healthy message is claimed, got " << claimed);
  CHECK_MESSAGE(poison_status == "rejected", "the poison is rejected, got '" << poison_status << "'");
  CHECK_MESSAGE(poison_reason.find(k_refusal) != std::string::npos,
                "its reason carries the database's message, got '" << poison_reason << "'");
  check_owners_and_audit(q.db());
}

TEST_CASE("HTTP: the poison and 200 others posted at once; the 200 get 200 claimed, the poison 422 rejected") {
  test_database db;
  db.make_campaign(k_campaign, 300);
  install_refusal(db);
  const auto log_path = temp_path("poison-http");
  const int pid = spawn_voucherd({"worker", "--source", "pg", "--campaign", k_campaign, "--concurrency", "2", "--batch",
                                  "100", "--http", "127.0.0.1:0", "--max-deliveries", std::to_string(k_max_deliveries),
                                  "--database-url", db.url()},
                                 {}, log_path);
  const auto port = wait_for_http_port(log_path, pid, 20s);
  REQUIRE_MESSAGE(port.has_value(), "the worker listens: " << tail(read_file(log_path)));

  // Every request on its own thread and connection, released together, the
  // poison's first.
  const auto users = input_users();
  std::vector<std::string> bodies;
  for (const auto& u : users) bodies.push_back(fmt::format(R"({{"user_id":"{}","message_id":"h-{}"}})", u, u));
  std::vector<http_reply> replies(users.size());
  {
    std::latch go{static_cast<std::ptrdiff_t>(users.size()) + 1};
    std::vector<std::jthread> clients;
    auto client = [&](std::size_t i) {
      go.arrive_and_wait();
      replies[i] = post_claim(*port, bodies[i]);
    };
    clients.emplace_back(client, k_poison_at);
    for (std::size_t i = 0; i < users.size(); ++i)
      if (i != k_poison_at) clients.emplace_back(client, i);
    go.arrive_and_wait();
  }
  const bool alive = still_running(pid);
  const int exit_code = terminate_and_wait(pid, std::chrono::seconds{15});
  const auto log = read_file(log_path);
  std::filesystem::remove(log_path);

  std::map<unsigned, int> healthy_statuses;
  std::string first_unexpected;
  int claimed = 0;
  for (std::size_t i = 0; i < users.size(); ++i) {
    if (i == k_poison_at) continue;
    ++healthy_statuses[replies[i].status];
    const auto status = json_field(replies[i].body, "status");
    if (replies[i].status == 200 && status == "claimed") ++claimed;
    else if (first_unexpected.empty())
      first_unexpected = fmt::format("{}: {} {}{}", users[i], replies[i].status, replies[i].body, replies[i].error);
  }
  std::string by_status;
  for (const auto& [s, n] : healthy_statuses) by_status += fmt::format(" {}x{}", s, n);
  CHECK_MESSAGE(claimed == k_healthy, "every healthy POST answers 200 claimed; got" << by_status
                                          << "; first other: " << first_unexpected << "\nworker log: " << tail(log));

  const auto& p = replies[k_poison_at];
  const auto poison_status = json_field(p.body, "status"), poison_reason = json_field(p.body, "reason");
  CHECK_MESSAGE(p.status == 422, "the poison answers 422, got " << p.status << " " << p.body << p.error);
  CHECK_MESSAGE(poison_status == "rejected", "with the rejected outcome: " << p.body);
  CHECK_MESSAGE(poison_reason.find(k_refusal) != std::string::npos,
                "whose reason carries the database's message: '" << poison_reason << "'");
  CHECK_MESSAGE(alive, "the poison never ends the worker: " << tail(log));
  CHECK_MESSAGE(exit_code == 0, "SIGTERM ends the worker with 0, got " << exit_code);
  check_owners_and_audit(db);
}

// Not poison: a database that fails every message alike (here a read-only
// one, as a standby before its promotion) blames none of them. Nothing is
// rejected however often the claims fail; once the database takes writes
// again every message is claimed.
TEST_CASE("stdin source: a read-only database rejects no message; all are claimed once it takes writes") {
  queue_under_test q{"stdin", k_campaign, 50};
  std::vector<std::string> lines;
  for (int u = 1; u <= 5; ++u) lines.push_back(fmt::format(R"({{"user_id":"ro-{}"}})", u));
  q.enqueue(lines);
  {
    auto conn = q.db().connect();
    pqxx::nontransaction tx{*conn};
    tx.exec(fmt::format("ALTER DATABASE {} SET default_transaction_read_only = on", q.db().name()));
  }
  const auto in_path = temp_path("ro-in"), out_path = temp_path("ro-out"), err_path = temp_path("ro-err");
  { std::ofstream{in_path, std::ios::binary} << q.input(); }
  const int pid = spawn_with_input(q.worker_args(1, 3, {"--max-deliveries", "2"}), in_path, out_path, err_path);
  // Far more failed transactions than --max-deliveries allows a poison.
  auto failures = [&] {
    const auto log = read_file(err_path);
    std::size_t n = 0;
    for (std::size_t at = log.find("read-only transaction"); at != std::string::npos;
         at = log.find("read-only transaction", at + 1))
      ++n;
    return n;
  };
  const bool failed_often = wait_until([&] { return failures() >= 6 || !still_running(pid); }, 60s);
  CHECK_MESSAGE(failed_often, "the worker tried the messages against the read-only database: " << tail(read_file(err_path)));
  CHECK_MESSAGE(read_file(out_path).empty(), "nothing answered while the database is read-only: " << read_file(out_path));
  {
    // Promoted: new sessions may write; the worker's are ended so that it reconnects.
    auto conn = q.db().connect();
    pqxx::nontransaction tx{*conn};
    tx.exec("SET default_transaction_read_only = off");  // this session began read-only too
    tx.exec(fmt::format("ALTER DATABASE {} RESET default_transaction_read_only", q.db().name()));
    tx.exec(fmt::format("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = '{}' AND pid <> pg_backend_pid()", q.db().name()));
  }
  const auto exit_code = exit_within(pid, 60s);
  const auto out = lines_of(read_file(out_path));
  const auto log = read_file(err_path);
  for (const auto& p : {in_path, out_path, err_path}) std::filesystem::remove(p);
  CHECK_MESSAGE(exit_code.value_or(-1) == 0, "exit 0 at the end of input: " << tail(log));
  REQUIRE_MESSAGE(out.size() == lines.size(), "one outcome line per message: " << out.size() << "\n" << tail(log));
  for (const auto& line : out)
    CHECK_MESSAGE(json_field(line, "status") == "claimed",
                  "claimed, not blamed for the database: " << line);
}

// A message whose claim is slow (a trigger that sleeps past the statement
// timeout) is poison too once the others get through: its batch is split,
// its neighbours commit, and after --max-deliveries timeouts alone it is
// rejected with the timeout as its reason.
TEST_CASE("pg source: a message that always times out holds up no batch and is dead-lettered") {
  queue_under_test q{"pg", k_campaign, 100};
  {
    auto conn = q.db().connect();
    pqxx::nontransaction tx{*conn};
    tx.exec(R"(CREATE FUNCTION slow_user() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN PERFORM pg_sleep(5); RETURN NEW; END $$)");
    tx.exec("CREATE TRIGGER slow_claim BEFORE UPDATE ON voucher_item FOR EACH ROW "
            "WHEN (NEW.user_id = 'slow') EXECUTE FUNCTION slow_user()");
  }
  std::vector<std::string> lines;
  for (int u = 1; u <= 30; ++u) lines.push_back(fmt::format(R"({{"user_id":"{}"}})", u == 3 ? "slow" : fmt::format("s{}", u)));
  q.enqueue(lines);
  const auto err_path = temp_path("slow-worker");
  const int pid = spawn_voucherd(q.worker_args(1, 10, {"--max-deliveries", "2", "--statement-timeout-ms", "500"}), {},
                                 err_path);
  const bool others = wait_until(
      [&] { return q.db().count("SELECT count(*) FROM message_queue WHERE status = 'claimed'") == 29; }, 60s);
  CHECK_MESSAGE(others, "the 29 others are claimed: " << status_counts(q.db(), "message_queue") << "\n"
                                                      << tail(read_file(err_path)));
  const bool given_up = wait_until(
      [&] { return q.db().count("SELECT count(*) FROM message_queue WHERE status = 'rejected'") == 1; }, 60s);
  CHECK_MESSAGE(given_up, "the slow message is rejected: " << status_counts(q.db(), "message_queue") << "\n"
                                                           << tail(read_file(err_path)));
  const auto reason = q.db().scalar("SELECT reason FROM message_queue WHERE status = 'rejected'");
  CHECK_MESSAGE(reason.find("statement timeout") != std::string::npos, "the timeout is its reason: " << reason);
  CHECK(q.db().count("SELECT attempts FROM message_queue WHERE status = 'rejected'") == 2);
  CHECK_MESSAGE(still_running(pid), "the worker keeps running");
  CHECK(terminate_and_wait(pid, 30s) == 0);
  std::filesystem::remove(err_path);
  const auto problems = audit_campaign(*q.db().connect(), k_campaign);
  CHECK_MESSAGE(problems.empty(), describe(problems));
}
