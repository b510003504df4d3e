// The README's story, replayed through the daemon: two messages on the
// Postgres queue, two worker processes, notifications through the log sink;
// then the same two employees under naive and redlock-delay.
#include <doctest/doctest.h>

#include <map>

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
  // 500 ms between read and write: both naive pods read before either writes,
  // even on a loaded machine.
  const auto r = run_voucherd({"story", "--database-url", db.url(), "--work-ms", "500"});
  CHECK_MESSAGE(r.exit_code == 0, r.err.substr(0, 2000));
  std::map<std::string, int> rows, ok_rows;
  for (const auto& line : lines_of(r.out)) {
    for (const std::string strategy : {"skip-locked", "naive", "redlock-delay"}) {
      if (!line.starts_with("| " + strategy + " ")) continue;
      ++rows[strategy];
      if (line.ends_with("| ok |")) ++ok_rows[strategy];
    }
  }
  CHECK_MESSAGE(rows["skip-locked"] == 2, r.out);
  CHECK_MESSAGE(ok_rows["skip-locked"] == 2, "both employee rows say ok under skip-locked:\n" << r.out);
  CHECK_MESSAGE(rows["naive"] == 2, r.out);
  CHECK_MESSAGE(ok_rows["naive"] == 1, "naive: one employee was told the code the other owns:\n" << r.out);
  CHECK_MESSAGE(rows["redlock-delay"] == 2, "redlock-delay ran next to them:\n" << r.out);
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
