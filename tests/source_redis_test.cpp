// What only the redis source does: take over another consumer's pending
// entries after --claim-idle-ms, and dead-letter an entry handed out more
// than --max-deliveries times instead of claiming it.
#include <doctest/doctest.h>

#include "worker_fixture.hpp"

using namespace voucherd;
using namespace voucherd::test;

namespace {

// Reads every entry of the stream as consumer `name` without acknowledging:
// a consumer that then dies.
void read_as_ghost(redis_server& server, const std::string& name) {
  redis_node node{server.endpoint(), std::chrono::milliseconds{2000}};
  node.command({"XGROUP", "CREATE", queue_under_test::k_stream, "voucherd", "0", "MKSTREAM"});
  auto r = node.command({"XREADGROUP", "GROUP", "voucherd", name, "COUNT", "1000", "STREAMS", queue_under_test::k_stream, ">"});
  REQUIRE_MESSAGE(r, "the ghost consumer read the stream");
}

}  // namespace

TEST_CASE("redis: entries pending on a dead consumer are taken over after --claim-idle-ms and claimed") {
  queue_under_test q{"redis", "ghosts", 10};
  q.enqueue({R"({"user_id":"a"})", R"({"user_id":"b"})", R"({"user_id":"c"})"});
  read_as_ghost(*q.redis(), "ghost");
  CHECK_MESSAGE(redis_int(*q.redis(), {"XPENDING", queue_under_test::k_stream, "voucherd"}) == 3,
                "three entries pending on the ghost");
  int exit_code = -1;
  std::string log;
  const auto out = q.drain(2, 1, &exit_code, &log);  // worker_args sets --claim-idle-ms 1000
  CHECK_MESSAGE(exit_code == 0, log.substr(0, 2000));
  REQUIRE_MESSAGE(out.size() == 3, "each taken-over entry has its outcome: " << log.substr(0, 2000));
  for (const auto& o : out) CHECK_MESSAGE(o.status == "claimed", "taken over and claimed, got " << o.status);
  CHECK_MESSAGE(redis_int(*q.redis(), {"XPENDING", queue_under_test::k_stream, "voucherd"}) == 0,
                "the ghost's entries are acknowledged by the consumer that took them over");
  CHECK_MESSAGE(log.find("took over pending messages") != std::string::npos, "the takeover is logged");
}

TEST_CASE("redis: an entry delivered more than --max-deliveries times is dead-lettered with the reason, not claimed") {
  queue_under_test q{"redis", "poison", 10};
  q.enqueue({R"({"user_id":"p"})"});
  read_as_ghost(*q.redis(), "ghost");  // delivery 1
  const auto err_path = temp_path("poison");
  auto args = q.worker_args(1, 1, {"--max-deliveries", "1", "--consumer", "live"});
  const int pid = spawn_voucherd(args, {}, err_path);
  const bool answered = wait_until([&] { return q.answered() >= 1; }, std::chrono::seconds{30});
  CHECK_MESSAGE(terminate_and_wait(pid, std::chrono::seconds{10}) == 0, "exit 0 on SIGTERM");
  CHECK_MESSAGE(answered, "the entry got an outcome: " << read_file(err_path).substr(0, 2000));
  std::filesystem::remove(err_path);
  const auto out = q.outcomes();
  REQUIRE_MESSAGE(out.size() == 1, "one outcome");
  CHECK_MESSAGE(out[0].status == "rejected", "dead-lettered entries are rejected, got " << out[0].status);
  CHECK_MESSAGE(out[0].reason.find("delivered 2 times without an outcome (max 1)") != std::string::npos, out[0].reason);
  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM dead_letter WHERE reason LIKE 'delivered 2 times%'") == 1,
                "the dead_letter table keeps it with the reason");
  CHECK_MESSAGE(redis_int(*q.redis(), {"XLEN", std::string{queue_under_test::k_stream} + ":dead"}) == 1,
                "it is on the dead-letter stream");
  CHECK_MESSAGE(redis_int(*q.redis(), {"XPENDING", queue_under_test::k_stream, "voucherd"}) == 0, "and acknowledged");
  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == 0, "nothing claimed");
}

TEST_CASE("redis: a producer's flat fields (user_id, campaign, message_id) are a message too; neither is a poison") {
  queue_under_test q{"redis", "flat", 10};
  {
    redis_node node{q.redis()->endpoint(), std::chrono::milliseconds{2000}};
    REQUIRE(node.command({"XADD", queue_under_test::k_stream, "*", "user_id", "f1", "campaign", "flat",
                          "message_id", "m-f1"}));
    REQUIRE(node.command({"XADD", queue_under_test::k_stream, "*", "user_id", "f2"}));  // campaign from --campaign
    REQUIRE(node.command({"XADD", queue_under_test::k_stream, "*", "note", "no message here"}));
  }
  q.enqueue({R"({"user_id":"f3"})"});  // what `voucherd enqueue` writes: a body field
  const auto err_path = temp_path("flat");
  const int pid = spawn_voucherd(q.worker_args(1, 1), {}, err_path);
  const bool answered = wait_until([&] { return q.answered() >= 4; }, std::chrono::seconds{30});
  CHECK_MESSAGE(terminate_and_wait(pid, std::chrono::seconds{10}) == 0, "exit 0 on SIGTERM");
  CHECK_MESSAGE(answered, "every entry got an outcome: " << read_file(err_path).substr(0, 2000));
  std::filesystem::remove(err_path);
  for (const char* user : {"f1", "f2", "f3"})
    CHECK_MESSAGE(q.db().count(fmt::format("SELECT count(*) FROM voucher_item WHERE user_id = '{}'", user)) == 1,
                  user << " owns a voucher");
  CHECK_MESSAGE(q.db().count("SELECT count(*) FROM message_outcome WHERE status = 'rejected' "
                             "AND reason LIKE '%neither a body field nor a user_id field%'") == 1,
                "the entry with neither is rejected with the reason");
}
