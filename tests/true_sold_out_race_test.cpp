// I7, answers are true (issue 8, items 2 and 3): `sold_out` only when no free
// voucher that could still be claimed is left. A test session row-locks the
// last free voucher(s) of a campaign with SELECT ... FOR UPDATE while
// `voucherd claim`, `voucherd claim-batch` and `voucherd worker --source stdin
// --batch 100` (more users than free vouchers) run:
//   - the holder rolls back: the claim waited and got that voucher;
//   - the holder takes the voucher itself and commits: sold_out, answered
//     only after the holder committed;
//   - the holder keeps the lock past --lock-timeout-ms: transient (exit 75;
//     the worker keeps the messages and retries), never sold_out, nothing taken.
// And concurrent duplicate deliveries of one user, through many `voucherd
// claim` processes and through POST /v1/claims, all answer claimed or
// already_claimed with one code, never a transient error.
#include <doctest/doctest.h>

#include <algorithm>
#include <barrier>
#include <random>
#include <set>

#include "common/failure.hpp"
#include "fault_fixture.hpp"

using namespace voucherd;
using namespace voucherd::test;
using namespace voucherd::test::fault;

namespace {

constexpr const char* k_campaign = "tail";

// (a) and (b) run with generous timeouts (through the environment, so that a
// binary without the options still shows what it answers): the holder lets
// go once the claim has waited on it for a second, long before these expire.
const std::map<std::string, std::string> k_patient_env{{"VOUCHERD_LOCK_TIMEOUT_MS", "20000"},
                                                       {"VOUCHERD_STATEMENT_TIMEOUT_MS", "30000"}};

enum class claim_path { claim, claim_batch, worker_batch };

std::string name_of(claim_path p) {
  switch (p) {
    case claim_path::claim: return "voucherd claim";
    case claim_path::claim_batch: return "voucherd claim-batch";
    case claim_path::worker_batch: return "voucherd worker --source stdin --batch 100";
  }
  return "?";
}

// A campaign whose first voucher is owned already and whose last free
// voucher(s) the holder will lock. For `voucherd claim` (one user) every free
// voucher is locked: 2 codes, the second locked. For the batch paths there
// are more users (3) than free vouchers (2) and only the last one is locked.
struct tail_scene {
  explicit tail_scene(claim_path p) : path{p} {
    db.make_campaign(k_campaign, p == claim_path::claim ? 2 : 3);
    ids = voucher_ids(db, k_campaign);
    auto r = run_voucherd({"claim", "--campaign", k_campaign, "--user", "early", "--database-url", db.url()});
    REQUIRE_MESSAGE(r.exit_code == 0, r.out, r.err);
    REQUIRE_MESSAGE(json_field(r.out, "voucher_id") == std::to_string(ids.front()), r.out);
    locked = ids.back();
    users = p == claim_path::claim ? std::vector<std::string>{"late"} : std::vector<std::string>{"b-1", "b-2", "b-3"};
  }

  // Starts the claimer of this path for `users`, its input written and closed.
  std::unique_ptr<child> start(const std::vector<std::string>& extra, const std::map<std::string, std::string>& env) {
    std::vector<std::string> args;
    std::string input;
    switch (path) {
      case claim_path::claim:
        args = {"claim", "--campaign", k_campaign, "--user", users.front()};
        break;
      case claim_path::claim_batch:
        args = {"claim-batch", "--campaign", k_campaign, "-"};
        for (const auto& u : users) input += u + "\n";
        break;
      case claim_path::worker_batch:
        // One claimer, so the three messages go to the database as one batch.
        args = {"worker", "--source", "stdin", "--campaign", k_campaign, "--batch", "100", "--concurrency", "1"};
        for (const auto& l : leading_lines) input += l + "\n";
        for (const auto& u : users) input += fmt::format(R"({{"user_id":"{}","message_id":"m-{}"}})", u, u) + "\n";
        break;
    }
    args.insert(args.end(), {"--database-url", db.url()});
    args.insert(args.end(), extra.begin(), extra.end());
    auto c = std::make_unique<child>(args, env, /*with_stdin_pipe=*/true);
    c->write_stdin(input);
    c->close_stdin();
    return c;
  }

  std::string owner_of(std::int64_t voucher) const {
    return db.scalar(fmt::format("SELECT coalesce(user_id, '') FROM voucher_item WHERE id = {}", voucher));
  }

  void check_audit() const {
    auto conn = db.connect();
    const auto problems = audit_campaign(*conn, k_campaign);
    CHECK_MESSAGE(problems.empty(), describe(problems));
  }

  claim_path path;
  test_database db;
  std::vector<std::int64_t> ids;
  std::int64_t locked = 0;
  std::vector<std::string> users;
  // worker_batch only: lines written ahead of the users' messages.
  std::vector<std::string> leading_lines;
};

// Keeps the holder's lock until the claimer's statement has waited on it for
// `min_wait` by the server's clock (so that a claimer that gives up early and
// answers anyway is caught in the act), or the claimer ended. Returns whether
// the claimer was still running then: it must not have answered while the
// voucher it needs was locked.
bool hold_while_claimer_waits(tail_scene& s, lock_holder& holder, child& claimer, std::chrono::milliseconds min_wait) {
  const bool waited = wait_for_lock_wait_of(s.db, holder.backend_pid(), min_wait, [&] { return !claimer.running(); }, 30s);
  if (!waited && claimer.running())
    MESSAGE("no backend waited ", min_wait.count(), " ms on the holder within 30 s; the claimer is still running");
  return claimer.running();
}

// Keeps the holder's lock until the claimer has waited on it in `tries`
// transactions (each ended by its lock timeout), or the claimer ended;
// returns how many it saw.
std::size_t hold_while_claimer_retries(tail_scene& s, lock_holder& holder, child& claimer, std::size_t tries) {
  return wait_for_lock_waits(s.db, holder.backend_pid(), tries, [&] { return !claimer.running(); }, 60s);
}

struct tally {
  std::map<std::string, std::string> status_of;   // user -> status
  std::map<std::string, std::string> voucher_of;  // user -> voucher id ("" when none)
  int count(const std::string& status) const {
    return static_cast<int>(std::count_if(status_of.begin(), status_of.end(),
                                          [&](const auto& kv) { return kv.second == status; }));
  }
};

tally read_outcomes(const std::string& out) {
  tally t;
  for (const auto& line : lines_of(out)) {
    t.status_of[json_field(line, "user_id")] = json_field(line, "status");
    t.voucher_of[json_field(line, "user_id")] = json_field(line, "voucher_id");
  }
  return t;
}

// (a) The holder rolls back once the claim has waited on it for a second.
void holder_rolls_back(claim_path p) {
  CAPTURE(name_of(p));
  tail_scene s{p};
  lock_holder holder{s.db};
  REQUIRE(holder.lock_vouchers(k_campaign, {s.locked}) == 1);
  auto claimer = s.start({}, k_patient_env);
  const bool waited = hold_while_claimer_waits(s, holder, *claimer, 1s);
  CHECK_MESSAGE(waited, name_of(p), " answered while the last free voucher was locked by an open transaction, "
                                    "before it came back free: ", claimer->describe());
  holder.release();
  const auto code = claimer->wait_for(60s);
  REQUIRE_MESSAGE(code.has_value(), name_of(p), " did not finish within 60 s of the holder's rollback: ",
                  claimer->describe());
  CHECK_MESSAGE(*code == 0, claimer->describe());
  const auto t = read_outcomes(claimer->out());
  REQUIRE_MESSAGE(t.status_of.size() == s.users.size(), "one outcome per user: ", claimer->describe());
  if (p == claim_path::claim) {
    CHECK_MESSAGE(t.status_of.at("late") == "claimed", "the voucher came back free, so the claim must get it: ",
                  claimer->describe());
    CHECK_MESSAGE(t.voucher_of.at("late") == std::to_string(s.locked), "the claim got the voucher that was locked: ",
                  claimer->describe());
  } else {
    // Two free vouchers (one of them locked for a while), three users.
    CHECK_MESSAGE(t.count("claimed") == 2, "both free vouchers claimed: ", claimer->describe());
    CHECK_MESSAGE(t.count("sold_out") == 1, "only the third user is sold out: ", claimer->describe());
    const auto owner = s.owner_of(s.locked);
    CHECK_MESSAGE(std::find(s.users.begin(), s.users.end(), owner) != s.users.end(),
                  "the voucher that was locked went to a user of the batch, owner '", owner, "': ",
                  claimer->describe());
    if (t.voucher_of.count(owner))
      CHECK_MESSAGE(t.voucher_of.at(owner) == std::to_string(s.locked), "its owner was told it: ", claimer->describe());
  }
  s.check_audit();
}

// (b) The holder claims the locked voucher itself and commits.
void holder_takes_it(claim_path p) {
  CAPTURE(name_of(p));
  tail_scene s{p};
  lock_holder holder{s.db};
  REQUIRE(holder.lock_vouchers(k_campaign, {s.locked}) == 1);
  auto claimer = s.start({}, k_patient_env);
  const bool waited = hold_while_claimer_waits(s, holder, *claimer, 1s);
  CHECK_MESSAGE(waited, name_of(p), " answered before the holder of the last free voucher committed: ",
                claimer->describe());
  holder.claim_locked(s.locked, "holder");
  holder.commit();
  const auto code = claimer->wait_for(60s);
  REQUIRE_MESSAGE(code.has_value(), name_of(p), " did not finish within 60 s of the holder's commit: ",
                  claimer->describe());
  const auto t = read_outcomes(claimer->out());
  REQUIRE_MESSAGE(t.status_of.size() == s.users.size(), "one outcome per user: ", claimer->describe());
  if (p == claim_path::claim) {
    CHECK_MESSAGE(*code == k_exit_sold_out, claimer->describe());
    CHECK_MESSAGE(t.status_of.at("late") == "sold_out", claimer->describe());
  } else {
    CHECK_MESSAGE(*code == 0, claimer->describe());
    CHECK_MESSAGE(t.count("claimed") == 1, "the one unlocked voucher claimed: ", claimer->describe());
    CHECK_MESSAGE(t.count("sold_out") == 2, "the other two sold out: ", claimer->describe());
  }
  CHECK_MESSAGE(s.owner_of(s.locked) == "holder", "the holder's claim stands");
  s.check_audit();
}

// (c) The holder keeps the lock past --lock-timeout-ms 500.
void holder_outlasts_lock_timeout(claim_path p) {
  CAPTURE(name_of(p));
  tail_scene s{p};
  lock_holder holder{s.db};
  REQUIRE(holder.lock_vouchers(k_campaign, {s.locked}) == 1);
  if (p == claim_path::worker_batch) {
    // Ahead of the tail's messages, in the same batch: a line that is no
    // message (answered before the claim) and a message of an unknown
    // campaign (a campaign group of its own, claimed first). The tail's
    // claims then sit at other indices in the batch than in the claim, and
    // theirs is the statement that commits before the suspicion is settled.
    s.leading_lines = {"not a message", R"({"user_id":"x-1","campaign":"nowhere","message_id":"m-x-1"})"};
  }
  auto claimer = s.start({"--lock-timeout-ms", "500"}, {});
  if (p == claim_path::worker_batch) {
    // The worker keeps the messages and retries them while the lock is held
    // (until it waited on it in three transactions, each ended by its lock
    // timeout), answers none of them sold_out, and finishes once the lock is gone.
    const auto tries = hold_while_claimer_retries(s, holder, *claimer, 3);
    CHECK_MESSAGE(tries >= 3, "the worker tried again after each lock timeout; waits seen: ", tries, " ",
                  claimer->describe());
    REQUIRE_MESSAGE(claimer->running(), "the worker stopped while a lock it waited for was held: ", claimer->describe());
    CHECK_MESSAGE(claimer->out().find("sold_out") == std::string::npos,
                  "sold_out answered while a free voucher was only locked: ", claimer->describe());
    holder.release();
    const auto code = claimer->wait_for(60s);
    REQUIRE_MESSAGE(code.has_value(), "the worker did not finish within 60 s of the release: ", claimer->describe());
    CHECK_MESSAGE(*code == 0, claimer->describe());
    const auto t = read_outcomes(claimer->out());
    CHECK_MESSAGE(lines_of(claimer->out()).size() == 5, "one outcome per line: ", claimer->describe());
    CHECK_MESSAGE(t.count("claimed") == 2, "both free vouchers claimed after the release: ", claimer->describe());
    CHECK_MESSAGE(t.count("sold_out") == 1, claimer->describe());
    CHECK_MESSAGE(t.count("rejected") == 2, "the line that is no message and the unknown campaign: ", claimer->describe());
    CHECK_MESSAGE(t.status_of.at("x-1") == "rejected", claimer->describe());
    s.check_audit();
    return;
  }
  const auto code = claimer->wait_for(60s);
  if (!code) {
    claimer->kill();
    FAIL_CHECK(name_of(p), " with --lock-timeout-ms 500 still waited after 60 s: ", claimer->describe());
  }
  holder.release();
  if (code) CHECK_MESSAGE(*code == k_exit_transient, "a lock wait that timed out is transient: ", claimer->describe());
  CHECK_MESSAGE(claimer->out().find("sold_out") == std::string::npos,
                "sold_out answered while a free voucher was only locked: ", claimer->describe());
  CHECK_MESSAGE(s.owner_of(s.locked).empty(), "the locked voucher is still free afterwards, owner '",
                s.owner_of(s.locked), "'");
  s.check_audit();
}

}  // namespace

TEST_CASE("a claim waits for the locked last free voucher and claims it when the holder rolls back") {
  SUBCASE("voucherd claim") { holder_rolls_back(claim_path::claim); }
  SUBCASE("voucherd claim-batch") { holder_rolls_back(claim_path::claim_batch); }
  SUBCASE("voucherd worker --source stdin --batch 100") { holder_rolls_back(claim_path::worker_batch); }
}

TEST_CASE("a claim answers sold_out only after the holder of the last free voucher took it and committed") {
  SUBCASE("voucherd claim") { holder_takes_it(claim_path::claim); }
  SUBCASE("voucherd claim-batch") { holder_takes_it(claim_path::claim_batch); }
  SUBCASE("voucherd worker --source stdin --batch 100") { holder_takes_it(claim_path::worker_batch); }
}

TEST_CASE("a lock held past --lock-timeout-ms makes the claim transient, never sold_out, and takes nothing") {
  SUBCASE("voucherd claim exits 75") { holder_outlasts_lock_timeout(claim_path::claim); }
  SUBCASE("voucherd claim-batch exits 75") { holder_outlasts_lock_timeout(claim_path::claim_batch); }
  SUBCASE("voucherd worker retries and keeps running") { holder_outlasts_lock_timeout(claim_path::worker_batch); }
}

TEST_CASE("concurrent duplicate voucherd claim processes for one user answer claimed or already_claimed, one code") {
  test_database db;
  db.make_campaign("dup", 40);
  constexpr int k_users = 12, k_copies = 8, k_users_per_wave = 2;
  std::mt19937 rng{20261127};
  std::map<std::string, std::vector<std::string>> lines_of_user;  // user -> outcome lines
  std::map<std::string, std::string> said_for_message;             // message id -> status
  for (int wave = 0; wave < k_users / k_users_per_wave; ++wave) {
    // All deliveries of a wave's users at once, in a seeded shuffled order.
    std::vector<std::pair<std::string, std::string>> deliveries;  // user, message id
    for (int u = 0; u < k_users_per_wave; ++u)
      for (int c = 0; c < k_copies; ++c) {
        const auto user = fmt::format("dup-{}", wave * k_users_per_wave + u);
        deliveries.emplace_back(user, fmt::format("{}-m{}", user, c));
      }
    std::shuffle(deliveries.begin(), deliveries.end(), rng);
    std::vector<std::unique_ptr<child>> procs;
    for (const auto& [user, message] : deliveries)
      procs.push_back(std::make_unique<child>(std::vector<std::string>{
          "claim", "--campaign", "dup", "--user", user, "--message-id", message, "--database-url", db.url()}));
    for (std::size_t i = 0; i < procs.size(); ++i) {
      const auto& [user, message] = deliveries[i];
      const auto code = procs[i]->wait_for(60s);
      CHECK_MESSAGE(code.has_value(), user, " did not answer within 60 s: ", procs[i]->describe());
      CHECK_MESSAGE((code == 0), "a duplicate delivery of ", user, " must not fail (no exit 75): ", procs[i]->describe());
      const auto out = procs[i]->out();
      lines_of_user[user].push_back(out);
      said_for_message[message] = json_field(out, "status");
    }
  }
  for (const auto& [user, outs] : lines_of_user) {
    CAPTURE(user);
    std::set<std::string> codes;
    int claimed = 0;
    for (const auto& out : outs) {
      const auto status = json_field(out, "status");
      CHECK_MESSAGE((status == "claimed" || status == "already_claimed"), out);
      claimed += status == "claimed";
      codes.insert(json_field(out, "code"));
    }
    CHECK_MESSAGE(codes.size() == 1, "one code for all ", outs.size(), " deliveries of ", user);
    CHECK_MESSAGE(claimed == 1, user, " was 'claimed' ", claimed, " times");
  }
  // Each message's one recorded outcome is the answer it got.
  auto conn = db.connect();
  pqxx::nontransaction tx{*conn};
  std::map<std::string, std::string> recorded;
  for (const auto& r : tx.exec("SELECT message_id, status FROM message_outcome")) recorded[r[0].c_str()] = r[1].c_str();
  CHECK(recorded.size() == said_for_message.size());
  for (const auto& [message, status] : said_for_message)
    CHECK_MESSAGE(recorded[message] == status, message, " answered ", status, ", recorded ", recorded[message]);
  CHECK(db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == k_users);
  const auto problems = audit_campaign(*db.connect(), "dup");
  CHECK_MESSAGE(problems.empty(), describe(problems));
}

TEST_CASE("concurrent duplicate POST /v1/claims for one user answer 200 with one code, never 503") {
  test_database db;
  db.make_campaign("web", 40);
  child worker{{"worker", "--http", "127.0.0.1:0", "--source", "pg", "--campaign", "web", "--concurrency", "8",
                "--database-url", db.url()}};
  const auto port = wait_for_http_port(worker, 30s);
  REQUIRE_MESSAGE(port.has_value(), "no 'http listening' line within 30 s: ", worker.describe());

  constexpr int k_users = 30, k_clients = 16;
  std::vector<std::vector<http_reply>> replies(k_users, std::vector<http_reply>(k_clients));
  std::barrier together{k_clients};
  std::vector<std::thread> clients;
  for (int t = 0; t < k_clients; ++t)
    clients.emplace_back([&, t] {
      for (int u = 0; u < k_users; ++u) {
        together.arrive_and_wait();  // every client delivers user u at the same moment
        replies[u][t] = post_claim(*port, fmt::format(R"({{"user_id":"web-{}","message_id":"web-{}-c{}"}})", u, u, t));
      }
    });
  for (auto& c : clients) c.join();
  CHECK_MESSAGE(worker.running(), "the worker is still up: ", worker.describe());

  std::map<unsigned, int> by_status;
  std::vector<std::string> not_ok;  // the answers that were not 200, for the message
  for (int u = 0; u < k_users; ++u) {
    CAPTURE(u);
    std::set<std::string> codes;
    int claimed = 0, ok = 0;
    for (int t = 0; t < k_clients; ++t) {
      const auto& r = replies[u][t];
      ++by_status[r.status];
      if (r.status != 200) {
        not_ok.push_back(fmt::format("web-{} client {}: HTTP {} {}{}", u, t, r.status, r.body, r.error));
        continue;
      }
      ++ok;
      const auto status = json_field(r.body, "status");
      CHECK_MESSAGE((status == "claimed" || status == "already_claimed"), r.body);
      claimed += status == "claimed";
      codes.insert(json_field(r.body, "code"));
    }
    CHECK_MESSAGE(codes.size() <= 1, "one code for every answer to web-", u);
    CHECK_MESSAGE(claimed <= 1, "web-", u, " was 'claimed' ", claimed, " times");
    if (ok == k_clients) CHECK_MESSAGE(claimed == 1, "web-", u, " was never 'claimed'");
  }
  std::string examples;
  for (std::size_t i = 0; i < not_ok.size() && i < 5; ++i) examples += "\n  " + not_ok[i];
  CHECK_MESSAGE(not_ok.empty(), not_ok.size(), " of ", k_users * k_clients,
                " duplicate deliveries were not answered 200 (a duplicate is never transient):", examples);
  std::string summary;
  for (const auto& [status, n] : by_status) summary += fmt::format(" {}x{}", n, status);
  MESSAGE("HTTP statuses:", summary);
  CHECK_MESSAGE(db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == k_users,
                "every user owns one voucher");
  // The outcome recorded for each answered message is the one it was told.
  {
    auto conn = db.connect();
    pqxx::nontransaction tx{*conn};
    std::map<std::string, std::string> recorded;
    for (const auto& r : tx.exec("SELECT message_id, status FROM message_outcome"))
      recorded[r[0].c_str()] = r[1].c_str();
    for (int u = 0; u < k_users; ++u)
      for (int t = 0; t < k_clients; ++t) {
        const auto& r = replies[u][t];
        if (r.status != 200) continue;
        const auto id = fmt::format("web-{}-c{}", u, t);
        CHECK_MESSAGE(recorded[id] == json_field(r.body, "status"), id, " answered ", r.body, ", recorded ", recorded[id]);
      }
    const auto problems = audit_campaign(*db.connect(), "web");
    CHECK_MESSAGE(problems.empty(), describe(problems));
  }
  CHECK_MESSAGE(worker.terminate(30s) == 0, "SIGTERM exits 0: ", worker.describe());
}
