// Concurrency: many connections and processes claim at once; afterwards the
// database is audited for I1-I3 and every request has exactly one outcome.
#include <doctest/doctest.h>

#include <atomic>
#include <barrier>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "claim/claim_core.hpp"
#include "support/test_db.hpp"

using namespace voucherd;
using namespace voucherd::test;

namespace {

std::map<claim_status, int> tally(const std::vector<claim_outcome>& outcomes) {
  std::map<claim_status, int> t;
  for (const auto& o : outcomes) ++t[o.status];
  return t;
}

}  // namespace

TEST_CASE("8 connections making 4000 claims over 3000 codes: 3000 claimed, 1000 sold out, I1-I3 hold") {
  test_database db;
  db.make_campaign("race", 3000);
  constexpr int k_workers = 8, k_users = 4000;
  std::vector<std::vector<claim_outcome>> per_worker(k_workers);
  std::barrier start{k_workers};
  std::vector<std::thread> threads;
  for (int w = 0; w < k_workers; ++w) {
    threads.emplace_back([&, w] {
      blocking_claimer engine{db.url(), {}, db.pooling()};
      start.arrive_and_wait();
      for (int u = w; u < k_users; u += k_workers)
        per_worker[w].push_back(engine.claim({"race", fmt::format("user-{}", u), {}}));
    });
  }
  for (auto& t : threads) t.join();
  std::vector<claim_outcome> all;
  for (auto& v : per_worker) all.insert(all.end(), v.begin(), v.end());
  REQUIRE(all.size() == k_users);
  auto t = tally(all);
  CHECK_MESSAGE(t[claim_status::claimed] == 3000, "claimed: ", t[claim_status::claimed]);
  CHECK_MESSAGE(t[claim_status::sold_out] == 1000, "sold_out: ", t[claim_status::sold_out]);

  std::set<std::string> codes_told;
  for (const auto& o : all)
    if (o.status == claim_status::claimed) CHECK_MESSAGE(codes_told.insert(o.code).second, "code told twice: ", o.code);
  const auto problems = audit_campaign(*db.connect(), "race");
  auto conn = db.connect();
  CHECK_MESSAGE(problems.empty(), describe(problems));
  // What each user was told is what the database says they own.
  pqxx::nontransaction tx{*conn};
  std::map<std::string, std::string> owned;
  for (const auto& r : tx.exec("SELECT user_id, code FROM voucher_item WHERE user_id IS NOT NULL"))
    owned[r[0].c_str()] = r[1].c_str();
  CHECK(owned.size() == 3000);
  for (const auto& o : all)
    if (o.status == claim_status::claimed) CHECK_MESSAGE(owned[o.user_id] == o.code, o.user_id);
}

TEST_CASE("concurrent duplicate delivery of one user from 8 connections returns the same code 8 times") {
  test_database db;
  db.make_campaign("dup", 200);
  constexpr int k_workers = 8, k_rounds = 25;
  std::vector<std::vector<claim_outcome>> per_worker(k_workers);
  std::barrier step{k_workers};
  std::vector<std::thread> threads;
  for (int w = 0; w < k_workers; ++w) {
    threads.emplace_back([&, w] {
      blocking_claimer engine{db.url(), {}, db.pooling()};
      for (int round = 0; round < k_rounds; ++round) {
        step.arrive_and_wait();  // all 8 deliveries of this user at the same moment
        per_worker[w].push_back(engine.claim({"dup", fmt::format("same-{}", round), {}}));
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int round = 0; round < k_rounds; ++round) {
    CAPTURE(round);
    std::set<std::string> codes;
    int claimed = 0;
    for (int w = 0; w < k_workers; ++w) {
      const auto& o = per_worker[w][round];
      CHECK_MESSAGE(o.owns_voucher(), to_json_line(o));
      codes.insert(o.code);
      claimed += o.status == claim_status::claimed;
    }
    CHECK_MESSAGE(codes.size() == 1, "different codes for one user");
    CHECK_MESSAGE(claimed == 1, "claimed ", claimed, " times");
  }
  CHECK(db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == k_rounds);
  auto conn = db.connect();
  const auto problems = audit_campaign(*conn, "dup");
  CHECK_MESSAGE(problems.empty(), describe(problems));
}

TEST_CASE("claim-batch of 10000 users racing single claims: no violation, one outcome each") {
  test_database db;
  db.make_campaign("batch", 8000);
  constexpr int k_users = 10000;
  std::string file;
  for (int u = 0; u < k_users; ++u) file += fmt::format("emp-{}\n", u);
  file += "emp-5\n";  // listed twice: claimed once
  file += "\n";       // an empty line: rejected, nothing else affected

  // Single claims for a random third of the same users, from 4 connections,
  // while the batch runs.
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<claim_outcome> singles;
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      blocking_claimer engine{db.url(), {}, db.pooling()};
      std::mt19937 rng{static_cast<unsigned>(1234 + w)};
      while (!stop.load()) {
        auto o = engine.claim({"batch", fmt::format("emp-{}", rng() % k_users), {}});
        std::lock_guard lock{mu};
        singles.push_back(o);
        if (singles.size() >= 3000) break;
      }
    });
  }
  const auto r = run_voucherd({"claim-batch", "--campaign", "batch", "-", "--database-url", db.url()}, file);
  stop = true;
  for (auto& t : threads) t.join();
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const auto lines = lines_of(r.out);
  REQUIRE_MESSAGE(lines.size() == k_users + 2, "one outcome line per input line");

  auto conn = db.connect();
  pqxx::nontransaction tx{*conn};
  std::map<std::string, std::string> owned;
  for (const auto& row : tx.exec("SELECT user_id, code FROM voucher_item WHERE user_id IS NOT NULL"))
    owned[row[0].c_str()] = row[1].c_str();
  CHECK_MESSAGE(owned.size() == 8000, "all 8000 codes claimed, got ", owned.size());
  int sold_out = 0;
  for (int u = 0; u < k_users; ++u) {
    const auto& line = lines[u];
    const auto user = fmt::format("emp-{}", u);
    REQUIRE_MESSAGE(line.find("\"user_id\":\"" + user + "\"") != std::string::npos, line);
    if (line.find("\"sold_out\"") != std::string::npos) {
      ++sold_out;
      CHECK_MESSAGE(!owned.count(user), user, " got sold_out but owns ", owned[user]);
    } else {
      CHECK_MESSAGE(line.find("\"code\":\"" + owned[user] + "\"") != std::string::npos, line);
    }
  }
  CHECK(sold_out == k_users - 8000);
  CHECK_MESSAGE(lines[k_users].find("already_claimed") != std::string::npos, lines[k_users]);
  CHECK_MESSAGE(lines[k_users + 1].find("\"rejected\"") != std::string::npos, lines[k_users + 1]);
  for (const auto& o : singles)
    if (o.owns_voucher()) CHECK_MESSAGE(owned[o.user_id] == o.code, to_json_line(o));
  const auto problems = audit_campaign(*db.connect(), "batch");
  CHECK_MESSAGE(problems.empty(), describe(problems));
}

TEST_CASE("8 processes running voucherd claim at once: every code owned once, I1-I3 hold") {
  test_database db;
  db.make_campaign("procs", 150);
  // Each process claims for a disjoint set of users via claim-batch of size 1
  // (one statement per user), so 8 OS processes race on the same pool.
  std::vector<int> pids;
  std::vector<std::string> outs;
  for (int p = 0; p < 8; ++p) {
    std::string file;
    for (int u = p; u < 200; u += 8) file += fmt::format("p-{}\n", u);
    const auto in = fmt::format("/tmp/vd-procs-{}-{}.txt", ::getpid(), p);
    outs.push_back(in + ".out");
    FILE* f = std::fopen(in.c_str(), "w");
    std::fputs(file.c_str(), f);
    std::fclose(f);
    pids.push_back(spawn_voucherd({"claim-batch", "--campaign", "procs", "--batch-size", "1", in,
                                   "--database-url", db.url()}, outs.back()));
  }
  for (int pid : pids) CHECK(wait_exit(pid) == 0);
  int claimed = 0, sold_out = 0;
  for (const auto& path : outs) {
    FILE* f = std::fopen(path.c_str(), "r");
    REQUIRE(f);
    char buf[4096];
    while (std::fgets(buf, sizeof buf, f)) {
      std::string line = buf;
      claimed += line.find("\"claimed\"") != std::string::npos;
      sold_out += line.find("\"sold_out\"") != std::string::npos;
    }
    std::fclose(f);
  }
  CHECK(claimed == 150);
  CHECK(sold_out == 50);
  auto conn = db.connect();
  const auto problems = audit_campaign(*conn, "procs");
  CHECK_MESSAGE(problems.empty(), describe(problems));
}
