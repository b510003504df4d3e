// The README's story, replayed through the daemon: two messages on the
// Postgres queue, two worker processes, notifications through the log sink.
#include <doctest/doctest.h>

#include "worker_fixture.hpp"

using namespace voucherd::test;

namespace {

std::size_t occurrences(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("the story through two worker daemons: each employee owns one code and was told that code") {
  test_database db;
  const auto r = run_voucherd({"story", "--database-url", db.url()});
  CHECK_MESSAGE(r.exit_code == 0, r.err.substr(0, 2000));
  int ok_rows = 0;
  for (const auto& line : lines_of(r.out))
    if ((line.starts_with("| 1 ") || line.starts_with("| 2 ")) && line.ends_with("| ok |")) ++ok_rows;
  CHECK_MESSAGE(ok_rows == 2, "both employee rows say ok:\n" << r.out);
  const bool both_codes = r.out.find("BV1LN2KJ") != std::string::npos && r.out.find("ASXKKQRG") != std::string::npos;
  CHECK_MESSAGE(both_codes, "the two codes went to the two employees:\n" << r.out);
  CHECK_MESSAGE(occurrences(r.err, "\"message\":\"worker starting\"") == 2, "two worker daemons ran:\n" << r.err.substr(0, 2000));
  CHECK_MESSAGE(occurrences(r.err, "\"message\":\"notification\"") == 2,
                "the log sink told each employee once:\n" << r.err.substr(0, 2000));
  CHECK_MESSAGE(db.count("SELECT count(*) FROM message_queue WHERE status = 'claimed'") == 2,
                "both messages went through the queue and were claimed");
  CHECK_MESSAGE(db.count("SELECT count(*) FROM notification_outbox WHERE status = 'sent'") == 2,
                "both notifications are marked sent");
}
