// One conformance suite, run against every message source (stdin, pg,
// redis): every message gets exactly one outcome, bad input is rejected with
// its reason and changes nothing, redelivery is idempotent, order is kept
// where the source promises it, a killed worker loses nothing, and nothing is
// acknowledged before its claim committed.
#include <doctest/doctest.h>

#include <map>
#include <set>

#include "worker_fixture.hpp"

using namespace voucherd;
using namespace voucherd::test;

namespace {

constexpr const char* k_campaign = "conf";

std::string good(int user) { return fmt::format(R"({{"user_id":"u{}"}})", user); }

// The bad kinds of SPEC section 9, each with what its rejection reason says.
struct bad_message {
  std::string body;
  std::string reason_has;
};

std::vector<bad_message> bad_messages() {
  return {
      {"{\"user_id\": 12, oops", "malformed JSON"},
      {R"({"campaign":"conf","message_id":"no-user"})", "no user_id"},
      {fmt::format(R"({{"user_id":"{}"}})", std::string(100 * 1024, 'x')), "longer than 128"},
      {R"({"user_id":"lost","campaign":"no-such-campaign"})", "unknown campaign"},
      {"{\"user_id\":\"\xff\xfe\xfd\"}", "not valid UTF-8"},
  };
}

std::string unreachable_database_url() {
  return fmt::format("postgresql://postgres@127.0.0.1:{}/nothing?connect_timeout=1", free_local_port());
}

}  // namespace

TEST_CASE("every message gets exactly one outcome; bad messages mixed 1:10 are rejected with their reason") {
  for (const auto& kind : all_sources()) {
    CAPTURE(kind);
    queue_under_test q{kind, k_campaign, 100};
    const auto bad = bad_messages();
    std::vector<std::string> lines;
    std::map<std::size_t, std::string> expected_reason;  // message index -> reason text
    int user = 0;
    for (std::size_t i = 0; user < 100; ++i) {
      if (i % 11 == 10) {
        expected_reason[i] = bad[(i / 11) % bad.size()].reason_has;
        lines.push_back(bad[(i / 11) % bad.size()].body);
      } else {
        lines.push_back(good(++user));
      }
    }
    expected_reason[lines.size()] = "longer than 1048576 bytes";
    lines.push_back(fmt::format(R"({{"user_id":"{}"}})", std::string(10 * 1024 * 1024, 'y')));
    q.enqueue(lines);

    int exit_code = -1;
    std::string log;
    const auto out = q.drain(4, 10, &exit_code, &log);
    CHECK_MESSAGE(exit_code == 0, "the worker ends with status 0 after SIGTERM or end of input: " << log.substr(0, 2000));
    REQUIRE_MESSAGE(out.size() == lines.size(), "one outcome per message, got " << out.size() << ": " << log.substr(0, 2000));
    for (std::size_t i = 0; i < out.size(); ++i) {
      CAPTURE(i);
      if (auto it = expected_reason.find(i); it != expected_reason.end()) {
        CHECK_MESSAGE(out[i].status == "rejected", "bad message " << i << " is rejected, got " << out[i].status);
        CHECK_MESSAGE(out[i].reason.find(it->second) != std::string::npos,
                      "the reason says '" << it->second << "', got '" << out[i].reason << "'");
      } else {
        CHECK_MESSAGE(out[i].status == "claimed", "good message " << i << " is claimed, got " << out[i].status
                                                                   << " " << out[i].reason);
      }
    }
    CHECK_MESSAGE(q.db().count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == 100,
                  "bad messages claimed nothing; every good one claimed one voucher");
    auto conn = q.db().connect();
    const auto problems = audit_campaign(*conn, k_campaign);
    CHECK_MESSAGE(problems.empty(), "I1-I3 hold: " << (problems.empty() ? "" : problems.front()));
    if (q.has_queue()) {
      CHECK_MESSAGE(q.db().count("SELECT count(*) FROM dead_letter WHERE reason <> ''") ==
                        static_cast<std::int64_t>(expected_reason.size()),
                    "every rejected message is dead-lettered with its reason");
    }
    if (kind == "redis") {
      CHECK_MESSAGE(redis_int(*q.redis(), {"XLEN", std::string{queue_under_test::k_stream} + ":dead"}) ==
                        static_cast<std::int64_t>(expected_reason.size()),
                    "rejected stream messages are copied to the dead-letter stream");
      CHECK_MESSAGE(redis_int(*q.redis(), {"XPENDING", queue_under_test::k_stream, "voucherd"}) == 0,
                    "every message was acknowledged after its outcome committed");
    }
  }
}

TEST_CASE("redelivery is idempotent: a user delivered again gets the same voucher, and one only") {
  for (const auto& kind : all_sources()) {
    CAPTURE(kind);
    queue_under_test q{kind, k_campaign, 10};
    const std::vector<std::string> lines{
        R"({"user_id":"u7","message_id":"m1"})", R"({"user_id":"u7","message_id":"m2"})",
        R"({"user_id":"u8"})",                   R"({"user_id":"u7","message_id":"m1"})",
        R"({"user_id":7})",                      R"({"user_id":"7"})",
    };
    q.enqueue(lines);
    int exit_code = -1;
    std::string log;
    const auto out = q.drain(4, 1, &exit_code, &log);
    CHECK_MESSAGE(exit_code == 0, log.substr(0, 2000));
    REQUIRE_MESSAGE(out.size() == lines.size(), "one outcome per delivery: " << log.substr(0, 2000));
    std::set<std::string> u7_vouchers;
    int u7_claimed = 0;
    for (std::size_t i : {0u, 1u, 3u}) {
      u7_vouchers.insert(out[i].voucher_id);
      u7_claimed += out[i].status == "claimed";
      CHECK_MESSAGE((out[i].status == "claimed" || out[i].status == "already_claimed"), out[i].status);
    }
    CHECK_MESSAGE(u7_claimed == 1, "one delivery of u7 claimed, the others found it: " << u7_claimed);
    CHECK_MESSAGE(u7_vouchers.size() == 1, "every delivery of u7 names the same voucher");
    CHECK_MESSAGE(out[4].voucher_id == out[5].voucher_id, "user 7 as a JSON number is the user \"7\"");
    CHECK_MESSAGE(q.db().count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == 3,
                  "three users, three vouchers");
    auto conn = q.db().connect();
    const auto problems = audit_campaign(*conn, k_campaign);
    CHECK_MESSAGE(problems.empty(), "I1-I3 hold: " << (problems.empty() ? "" : problems.front()));
  }
}

TEST_CASE("order is kept where promised: stdin answers in input order; a single claimer takes a queue oldest first") {
  for (const auto& kind : all_sources()) {
    CAPTURE(kind);
    queue_under_test q{kind, k_campaign, 300};
    std::vector<std::string> lines;
    for (int u = 1; u <= 200; ++u) lines.push_back(good(u));
    q.enqueue(lines);
    const int concurrency = kind == "stdin" ? 8 : 1;
    int exit_code = -1;
    std::string log;
    const auto out = q.drain(concurrency, 1, &exit_code, &log);
    CHECK_MESSAGE(exit_code == 0, log.substr(0, 2000));
    REQUIRE_MESSAGE(out.size() == lines.size(), log.substr(0, 2000));
    bool in_order = true;
    for (std::size_t i = 0; i < out.size(); ++i) {
      if (kind == "stdin") in_order = in_order && out[i].user_id == fmt::format("u{}", i + 1);
      else if (i > 0) in_order = in_order && std::stoll(out[i].voucher_id) > std::stoll(out[i - 1].voucher_id);
    }
    CHECK_MESSAGE(in_order, kind << ": outcomes follow the input order");
  }
}

TEST_CASE("crash recovery: after a worker is killed with SIGKILL mid-run, every message still gets exactly one outcome") {
  for (const auto& kind : all_sources()) {
    CAPTURE(kind);
    constexpr int k_messages = 1500;
    queue_under_test q{kind, k_campaign, k_messages};
    std::vector<std::string> lines;
    for (int u = 1; u <= k_messages; ++u) lines.push_back(good(u));
    q.enqueue(lines);
    if (kind == "stdin") {
      // stdin has no queue to come back to: the crash-safe way to resume is
      // to run the input again, which answers with the same vouchers.
      int first_exit = -1, second_exit = -1;
      const auto first = q.drain(4, 1, &first_exit);
      const auto again = q.drain(4, 1, &second_exit);
      REQUIRE_MESSAGE(first.size() == lines.size(), "first run answers every line");
      REQUIRE_MESSAGE(again.size() == lines.size(), "second run answers every line");
      bool same = true;
      for (std::size_t i = 0; i < lines.size(); ++i)
        same = same && again[i].status == "already_claimed" && again[i].voucher_id == first[i].voucher_id;
      CHECK_MESSAGE(same, "a rerun answers already_claimed with the same vouchers");
      continue;
    }
    const int victim = spawn_voucherd(q.worker_args(2, 1, {"--consumer", "victim"}));
    const bool started = wait_until([&] { return q.answered() >= 300; }, std::chrono::seconds{60});
    ::kill(victim, SIGKILL);
    CHECK_MESSAGE(wait_exit(victim) == 128 + SIGKILL, "the first worker died of SIGKILL");
    CHECK_MESSAGE(started, "the first worker got going before it was killed");
    const auto after_kill = q.answered();
    CHECK_MESSAGE(after_kill < k_messages, "the kill came mid-run (" << after_kill << " answered)");

    const auto err_path = temp_path("rescuer");
    const int rescuer = spawn_voucherd(q.worker_args(2, 1, {"--consumer", "rescuer"}), {}, err_path);
    const bool all = wait_until([&] { return q.answered() >= k_messages; }, std::chrono::seconds{90});
    CHECK_MESSAGE(terminate_and_wait(rescuer, std::chrono::seconds{15}) == 0, "the second worker exits 0");
    CHECK_MESSAGE(all, "every message is answered after the crash: " << q.answered() << "/" << k_messages
                                                                      << "\n" << read_file(err_path).substr(0, 3000));
    std::filesystem::remove(err_path);
    const auto out = q.outcomes();
    CHECK_MESSAGE(out.size() == static_cast<std::size_t>(k_messages), "exactly one recorded outcome per message");
    int owners = 0;
    for (const auto& o : out) owners += o.status == "claimed";
    CHECK_MESSAGE(owners == k_messages, "each message's first effect is its claim (no message claimed twice or lost)");
    CHECK_MESSAGE(q.db().count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == k_messages,
                  "one voucher per user");
    auto conn = q.db().connect();
    const auto problems = audit_campaign(*conn, k_campaign);
    CHECK_MESSAGE(problems.empty(), "I1-I3 hold: " << (problems.empty() ? "" : problems.front()));
    if (kind == "redis")
      CHECK_MESSAGE(redis_int(*q.redis(), {"XPENDING", queue_under_test::k_stream, "voucherd"}) == 0,
                    "the killed consumer's pending messages were taken over and acknowledged");
  }
}

TEST_CASE("nothing is acknowledged before its claim committed: with the database away the worker waits, then answers all") {
  for (const auto& kind : all_sources()) {
    CAPTURE(kind);
    queue_under_test q{kind, k_campaign, 50};
    std::vector<std::string> lines;
    for (int u = 1; u <= 40; ++u) lines.push_back(good(u));
    q.enqueue(lines);

    // A worker whose database is unreachable: it must keep running, answer
    // nothing and acknowledge nothing, and stop cleanly.
    auto args = q.worker_args(2, 1);
    const auto url_at = std::find(args.begin(), args.end(), "--database-url") - args.begin() + 1;
    args[url_at] = unreachable_database_url();
    const auto in_path = temp_path("in"), out_path = temp_path("out"), err_path = temp_path("err");
    { std::ofstream{in_path, std::ios::binary} << q.input(); }
    const int pid = spawn_with_input(args, in_path, out_path, err_path);
    std::this_thread::sleep_for(std::chrono::seconds{2});  // the condition here is "nothing happens"
    CHECK_MESSAGE(still_running(pid), "a transient fault never ends the worker");
    if (kind == "redis")
      CHECK_MESSAGE(redis_int(*q.redis(), {"XPENDING", queue_under_test::k_stream, "voucherd"}) > 0,
                    "messages it read stay pending: not acknowledged without a commit");
    CHECK_MESSAGE(terminate_and_wait(pid, std::chrono::seconds{10}) == 0, "SIGTERM ends it with status 0");
    CHECK_MESSAGE(read_file(out_path).empty(), "no outcome was printed without a commit");
    const auto log = read_file(err_path);
    CHECK_MESSAGE(log.find("cannot connect to the database") != std::string::npos, "it says why it waits: " << log.substr(0, 1000));
    CHECK_MESSAGE(q.db().count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == 0, "nothing claimed");
    for (const auto& p : {in_path, out_path, err_path}) std::filesystem::remove(p);

    int exit_code = -1;
    const auto out = q.drain(2, 1, &exit_code);
    CHECK_MESSAGE(exit_code == 0, "a worker with the database answers");
    CHECK_MESSAGE(out.size() == lines.size(), "every message is answered once the database is there");
    if (kind == "redis")
      CHECK_MESSAGE(redis_int(*q.redis(), {"XPENDING", queue_under_test::k_stream, "voucherd"}) == 0,
                    "all acknowledged after their commits");
  }
}
