// The command-line contract of SPEC section 4 and the bad-input table of
// section 9: every bad input gets its exit code and message, and changes
// nothing in the database.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "common/failure.hpp"
#include "pool/code_generator.hpp"
#include "support/files.hpp"
#include "support/run_program.hpp"
#include "support/test_db.hpp"

using namespace voucherd;
using namespace voucherd::test;

namespace {

// Everything a bad input must leave alone.
std::string fingerprint(const test_database& db) {
  return db.scalar(
      "SELECT concat_ws('/', (SELECT count(*) FROM campaign), (SELECT count(*) FROM voucher_item), "
      "(SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL), (SELECT count(*) FROM notification_outbox), "
      "(SELECT count(*) FROM message_outcome), "
      "(SELECT coalesce(string_agg(id || ':' || free_from || ':' || last_voucher_id, ',' ORDER BY id), '') FROM campaign))");
}

struct bad_case {
  std::string name;
  std::vector<std::string> args;
  std::string input;
  int exit_code;
  std::string message;  // expected in stdout or stderr
};

}  // namespace

TEST_CASE("claim prints the outcome line of SPEC section 4 and exits 0, then 3 when sold out") {
  test_database db;
  REQUIRE(run_voucherd({"campaign", "create", "signup", "--database-url", db.url()}).exit_code == 0);
  auto imp = run_voucherd({"import", "--campaign", "signup", "-", "--database-url", db.url()}, "BV1LN2KJ\n");
  REQUIRE_MESSAGE(imp.exit_code == 0, imp.err);

  auto r = run_voucherd({"claim", "--campaign", "signup", "--user", "1", "--database-url", db.url()});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK(r.out == "{\"status\":\"claimed\",\"campaign\":\"signup\",\"user_id\":\"1\",\"voucher_id\":1,\"code\":\"BV1LN2KJ\"}\n");

  r = run_voucherd({"claim", "--campaign", "signup", "--user", "1", "--database-url", db.url()});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK(r.out == "{\"status\":\"already_claimed\",\"campaign\":\"signup\",\"user_id\":\"1\",\"voucher_id\":1,\"code\":\"BV1LN2KJ\"}\n");

  r = run_voucherd({"claim", "--campaign", "signup", "--user", "2", "--database-url", db.url()});
  CHECK_MESSAGE(r.exit_code == k_exit_sold_out, r.err);
  CHECK_MESSAGE(r.out.find("\"status\":\"sold_out\"") != std::string::npos, r.out);
  CHECK_MESSAGE(r.out.find("\"reason\":") != std::string::npos, r.out);
  CHECK(db.count("SELECT count(*) FROM notification_outbox") == 1);
  CHECK(audit_campaign(*db.connect(), "signup").empty());
}

TEST_CASE("a redelivered message id returns the same code and records one outcome") {
  test_database db;
  db.make_campaign("redeliver", 5);
  for (int i = 0; i < 3; ++i) {
    auto r = run_voucherd({"claim", "--campaign", "redeliver", "--user", "u-7", "--message-id", "m-1",
                           "--database-url", db.url()});
    CHECK_MESSAGE(r.exit_code == 0, r.err);
    CHECK_MESSAGE(r.out.find("\"code\":\"REDELIVE000001\"") != std::string::npos, r.out);
    CHECK_MESSAGE(r.out.find("\"message_id\":\"m-1\"") != std::string::npos, r.out);
  }
  CHECK(db.count("SELECT count(*) FROM message_outcome WHERE message_id = 'm-1'") == 1);
  CHECK(db.scalar("SELECT status FROM message_outcome WHERE message_id = 'm-1'") == "claimed");
  CHECK(db.count("SELECT count(*) FROM voucher_item WHERE user_id = 'u-7'") == 1);
}

TEST_CASE("bad input gets its exit code and a clear message, and changes nothing") {
  test_database db;
  db.make_campaign("live", 3);
  REQUIRE(run_voucherd({"campaign", "create", "expired", "--starts-at", "2020-01-01T00:00:00Z", "--ends-at",
                        "2020-02-01T00:00:00Z", "--database-url", db.url()}).exit_code == 0);
  REQUIRE(run_voucherd({"campaign", "create", "future", "--starts-at", "2999-01-01T00:00:00Z",
                        "--database-url", db.url()}).exit_code == 0);
  REQUIRE(run_voucherd({"import", "--campaign", "expired", "-", "--database-url", db.url()}, "OLD1\n").exit_code == 0);
  REQUIRE(run_voucherd({"import", "--campaign", "future", "-", "--database-url", db.url()}, "NEW1\n").exit_code == 0);
  const std::string url = db.url();
  const std::string long_id(129, 'x');
  const std::string long_code(65, 'C');

  const std::vector<bad_case> cases{
      {"empty user id", {"claim", "--campaign", "live", "--user", ""}, "", k_exit_rejected, "user id is empty"},
      {"129-character user id", {"claim", "--campaign", "live", "--user", long_id}, "", k_exit_rejected,
       "longer than 128 characters"},
      {"non-UTF-8 user id", {"claim", "--campaign", "live", "--user", "ab\xff\xfe"}, "", k_exit_rejected,
       "not valid UTF-8"},
      {"control character in user id", {"claim", "--campaign", "live", "--user", "a\tb"}, "", k_exit_rejected,
       "control characters"},
      {"unknown campaign", {"claim", "--campaign", "nope", "--user", "1"}, "", k_exit_rejected, "unknown campaign"},
      {"campaign name that is not a slug", {"claim", "--campaign", "Bad Name", "--user", "1"}, "", k_exit_rejected,
       "campaign name"},
      {"expired campaign", {"claim", "--campaign", "expired", "--user", "1"}, "", k_exit_rejected, "not active"},
      {"campaign not started", {"claim", "--campaign", "future", "--user", "1"}, "", k_exit_rejected, "not active"},
      {"missing --user", {"claim", "--campaign", "live"}, "", k_exit_usage, "--user"},
      {"unknown option", {"claim", "--campaign", "live", "--user", "1", "--frobnicate"}, "", k_exit_usage,
       "frobnicate"},
      {"code file with a duplicate", {"import", "--campaign", "live", "-"}, "A1\nB2\nA1\n", k_exit_rejected,
       "line 3: duplicate code A1 (first on line 1)"},
      {"code file with an empty line", {"import", "--campaign", "live", "-"}, "A1\n\nB2\n", k_exit_rejected,
       "line 2: empty line"},
      {"code file with an over-long code", {"import", "--campaign", "live", "-"}, "A1\n" + long_code + "\n",
       k_exit_rejected, "line 2: code is 65 characters long"},
      {"code file with a space in a code", {"import", "--campaign", "live", "-"}, "A 1\n", k_exit_rejected,
       "line 1: code contains a space"},
      {"code already in the campaign", {"import", "--campaign", "live", "-"}, "Z9\nLIVE000002\n", k_exit_rejected,
       "line 2: code LIVE000002 is already in campaign live"},
      {"import into an unknown campaign", {"import", "--campaign", "nope", "-"}, "A1\n", k_exit_rejected,
       "unknown campaign"},
      {"duplicate campaign", {"campaign", "create", "live"}, "", k_exit_rejected, "exists already"},
      {"inverted campaign window", {"campaign", "create", "inverted", "--starts-at", "2030-01-02", "--ends-at",
                                    "2030-01-01"}, "", k_exit_rejected, "start before it ends"},
      {"bad timestamp", {"campaign", "create", "badtime", "--starts-at", "yesterday-ish"}, "", k_exit_rejected,
       "timestamp"},
      {"generate with a zero count", {"generate", "--campaign", "live", "--count", "0"}, "", k_exit_usage,
       "--count"},
      {"stats of an unknown campaign", {"stats", "--campaign", "nope"}, "", k_exit_rejected, "unknown campaign"},
      {"more short codes than exist", {"generate", "--campaign", "live", "--count", "1000000", "--length", "4"}, "",
       k_exit_usage, "more than half of the 531441 possible codes of length 4"},
      {"a timeout that is not a number", {"claim", "--campaign", "live", "--user", "1", "--lock-timeout-ms", "soon"},
       "", k_exit_usage, "lock-timeout-ms"},
      {"a timeout past a day", {"claim", "--campaign", "live", "--user", "1", "--statement-timeout-ms", "999999999"},
       "", k_exit_usage, "must be 0..86400000"},
      // Cases found 2026-11-28: a negative flag was taken for "not given"; a directory read as an empty
      // file (claim-batch exit 0, enqueue {"enqueued":0}); a retention past a timestamp deleted first and
      // failed after.
      {"a negative timeout", {"stats", "--campaign", "live", "--statement-timeout-ms", "-5"}, "", k_exit_usage,
       "must be 0..86400000 milliseconds, got -5"},
      {"claim-batch of a directory", {"claim-batch", "--campaign", "live", "/tmp"}, "", k_exit_usage,
       "cannot open /tmp: it is a directory"},
      {"enqueue of a directory", {"enqueue", "--source", "pg", "/tmp"}, "", k_exit_usage,
       "cannot open /tmp: it is a directory"},
      {"import of a directory", {"import", "--campaign", "live", "/tmp"}, "", k_exit_usage,
       "cannot open /tmp: it is a directory"},
      {"a retention past a century", {"prune", "--keep-done", "40000d"}, "", k_exit_usage,
       "--keep-done must be at most 36500d"},
      // It answered each line "unknown campaign" and exited 0.
      {"claim-batch for an unknown campaign", {"claim-batch", "--campaign", "nope", "-"}, "u1\nu2\n",
       k_exit_rejected, "unknown campaign 'nope'"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    const auto before = fingerprint(db);
    auto args = c.args;
    args.insert(args.end(), {"--database-url", url});
    const auto r = run_voucherd(args, c.input);
    CHECK_MESSAGE(r.exit_code == c.exit_code, c.name, ": ", r.out, r.err);
    CHECK_MESSAGE((r.out + r.err).find(c.message) != std::string::npos, c.name, ": ", r.out, r.err);
    CHECK_MESSAGE(fingerprint(db) == before, c.name, " changed the database");
  }
  // A setting the server refuses at connect is the set-up's fault: 78, not 75 (a worker retried it forever).
  const auto misspelled = run_voucherd(
      {"claim", "--campaign", "live", "--user", "1", "--database-url",
       url + (url.find('?') == std::string::npos ? "?" : "&") + "options=-c%20statment_timeout%3D1000"});
  CHECK_MESSAGE(misspelled.exit_code == k_exit_config, misspelled.err);
  CHECK_MESSAGE(misspelled.err.find("check the -c settings") != std::string::npos, misspelled.err);
}

TEST_CASE("a database that is down gives exit 75 and a clear message") {
  // A port nothing listens on: the server is "down".
  const std::string url = "postgresql://postgres@127.0.0.1:9/postgres";
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"claim", "--campaign", "live", "--user", "1"}, {"migrate"}, {"stats", "--campaign", "live"}}) {
    auto full = args;
    full.insert(full.end(), {"--database-url", url});
    const auto r = run_voucherd(full);
    CHECK_MESSAGE(r.exit_code == k_exit_transient, args[0], ": ", r.err);
    CHECK_MESSAGE(r.err.find("cannot connect to the database") != std::string::npos, r.err);
    CHECK_MESSAGE(r.out.empty(), r.out);
  }
}

TEST_CASE("import reads CSV with a code column and reports every bad line") {
  test_database db;
  REQUIRE(run_voucherd({"campaign", "create", "csv", "--database-url", db.url()}).exit_code == 0);
  auto r = run_voucherd({"import", "--campaign", "csv", "-", "--database-url", db.url()},
                        "batch,code,note\r\n1,AAA1,first\r\n1,\"BBB2\",\"quoted, with comma\"\r\n");
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK(db.scalar("SELECT string_agg(code, ',' ORDER BY id) FROM voucher_item") == "AAA1,BBB2");

  r = run_voucherd({"import", "--campaign", "csv", "-", "--database-url", db.url()}, "C1\n\nC1\nAAA1\n");
  CHECK(r.exit_code == k_exit_rejected);
  CHECK_MESSAGE(r.out.find("\"error_count\":2") != std::string::npos, r.out);
  CHECK_MESSAGE(r.err.find("line 2") != std::string::npos, r.err);
  CHECK_MESSAGE(r.err.find("line 3") != std::string::npos, r.err);
  CHECK(db.count("SELECT count(*) FROM voucher_item") == 2);
  // Blank lines at the end of a file are no lines (before 2026-11-28 the
  // first of them failed the import); a file of nothing else has no codes.
  r = run_voucherd({"import", "--campaign", "csv", "-", "--database-url", db.url()}, "TTT1\nTTT2\n\n\n");
  CHECK_MESSAGE(r.exit_code == 0, r.out, r.err);
  r = run_voucherd({"import", "--campaign", "csv", "-", "--database-url", db.url()}, "code\n\n");
  CHECK(r.exit_code == k_exit_rejected);
  CHECK_MESSAGE(r.err.find("the file has no codes") != std::string::npos, r.err);
  r = run_voucherd({"import", "--campaign", "csv", "-", "--database-url", db.url()}, "\n\n");
  CHECK_MESSAGE(r.err.find("the file has no codes") != std::string::npos, r.err);
  CHECK(db.scalar("SELECT string_agg(code, ',' ORDER BY id) FROM voucher_item") == "AAA1,BBB2,TTT1,TTT2");
  db.scalar("DELETE FROM voucher_item WHERE code LIKE 'TTT_' RETURNING 1");

  // A spreadsheet's "CSV UTF-8" starts with a byte order mark: the header is
  // still the header, and a plain list's first code is still its code.
  r = run_voucherd({"import", "--campaign", "csv", "-", "--database-url", db.url()},
                   "\xEF\xBB\xBF" "code,note\r\nCCC3,x\r\n");
  CHECK_MESSAGE(r.exit_code == 0, r.out, r.err);
  r = run_voucherd({"import", "--campaign", "csv", "-", "--database-url", db.url()}, "\xEF\xBB\xBF" "DDD4\nEEE5\n");
  CHECK_MESSAGE(r.exit_code == 0, r.out, r.err);
  CHECK(db.scalar("SELECT string_agg(code, ',' ORDER BY id) FROM voucher_item") == "AAA1,BBB2,CCC3,DDD4,EEE5");

  // A spreadsheet's header says "Code". Before 2026-11-28 only "code" was a
  // header: the others were imported as codes, "Code,Email" among them.
  r = run_voucherd({"import", "--campaign", "csv", "-", "--database-url", db.url()}, "Code,Email\nFFF6,a@x\n");
  CHECK_MESSAGE(r.exit_code == 0, r.out, r.err);
  r = run_voucherd({"import", "--campaign", "csv", "-", "--database-url", db.url()}, "id, CODE \n7,GGG7\n");
  CHECK_MESSAGE(r.exit_code == 0, r.out, r.err);
  CHECK(db.scalar("SELECT string_agg(code, ',' ORDER BY id) FROM voucher_item") ==
        "AAA1,BBB2,CCC3,DDD4,EEE5,FFF6,GGG7");
  // A quoted field that does not end on its line is a bad line (it was
  // read as if closed, and the next line as another code), and nothing loads.
  r = run_voucherd({"import", "--campaign", "csv", "-", "--database-url", db.url()}, "code\n\"HHH8\nIII9\"\nJJJ1\n");
  CHECK(r.exit_code == k_exit_rejected);
  CHECK_MESSAGE(r.err.find("line 2: CSV line has a quoted field that does not end on the line") != std::string::npos,
                r.err);
  CHECK(db.count("SELECT count(*) FROM voucher_item") == 7);
  // The same in the header: a bad line, not a plain file whose lines are
  // codes (before the review of this change, all three lines were stored).
  r = run_voucherd({"import", "--campaign", "csv", "-", "--database-url", db.url()},
                   "code,\"note\nKKK1,first\nKKK2,second\n");
  CHECK(r.exit_code == k_exit_rejected);
  CHECK_MESSAGE(r.err.find("line 1: CSV header has a quoted field that does not end on the line") != std::string::npos,
                r.err);
  CHECK(db.count("SELECT count(*) FROM voucher_item") == 7);
  // A header is said on stderr, so that a first code spelled "Code" is not
  // lost unseen.
  r = run_voucherd({"import", "--campaign", "csv", "-", "--database-url", db.url()}, "CODE\nLLL1\n");
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK_MESSAGE(r.err.find("line 1 is a CSV header; the codes are read from its column 1") != std::string::npos, r.err);
  CHECK(db.count("SELECT count(*) FROM voucher_item") == 8);
}

TEST_CASE("claim-batch and enqueue read a file with a byte order mark and CRLF lines as import does") {
  test_database db;
  db.make_campaign("bom", 5);
  auto r = run_voucherd({"claim-batch", "--campaign", "bom", "-", "--database-url", db.url()},
                        "\xEF\xBB\xBF" "u1\r\nu2\r\n");
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  // Before 2026-11-28 the first user was claimed as "\uFEFFu1".
  CHECK(db.scalar("SELECT string_agg(user_id, ',' ORDER BY user_id) FROM voucher_item") == "u1,u2");
  r = run_voucherd({"enqueue", "--source", "pg", "--campaign", "bom", "-", "--database-url", db.url()},
                   "\xEF\xBB\xBF" R"({"user_id":"m1"})" "\r\n");
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  // Parsed where it was enqueued, not kept as a body the worker would reject.
  CHECK(db.scalar("SELECT coalesce(user_id, '(not parsed)') FROM message_queue") == "m1");
}

TEST_CASE("claim-batch after a campaign ended still gives its owners their codes") {
  // A re-run (its first output lost) must recover what was given out, as
  // claim does; the others are rejected line by line. Refusing the whole
  // file up front, tried on 2026-11-28, lost that (found in review).
  test_database db;
  db.make_campaign("ended", 3);
  auto r = run_voucherd({"claim-batch", "--campaign", "ended", "-", "--database-url", db.url()}, "u1\n");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const auto code = db.scalar("SELECT code FROM voucher_item WHERE user_id = 'u1'");
  db.scalar("UPDATE campaign SET ends_at = now() - interval '1 second' WHERE name = 'ended' RETURNING 1");
  r = run_voucherd({"claim-batch", "--campaign", "ended", "-", "--database-url", db.url()}, "u1\nu2\n");
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK_MESSAGE(r.out.find(R"("status":"already_claimed")") != std::string::npos, r.out);
  CHECK_MESSAGE(r.out.find(code) != std::string::npos, r.out);
  CHECK_MESSAGE(r.out.find("campaign is not active") != std::string::npos, r.out);
  CHECK(db.count("SELECT count(*) FROM voucher_item WHERE user_id IS NOT NULL") == 1);
}

TEST_CASE("a line with no end is read in bounded memory, and each command answers it as too long") {
  test_database db;
  db.make_campaign("long", 3);
  // 600 MiB of zeros with no newline (a sparse file, like a device or a
  // binary given by mistake), read under a 512 MiB address-space limit.
  // Before 2026-11-28 the whole line was held in memory: import ran out and
  // said "cannot read the code file" (64).
  const auto zeros = temp_path("zeros");
  std::filesystem::resize_file((std::ofstream{zeros}, zeros), 600ull << 20);
  const auto big = run_program({"bash", "-c", "ulimit -v 524288; exec \"$0\" import --campaign long \"$1\" --database-url \"$2\"",
                        VOUCHERD_BIN, zeros, db.url()});
  std::filesystem::remove(zeros);
  CHECK_MESSAGE(big.exit_code == k_exit_rejected, big.out, big.err);
  CHECK_MESSAGE(big.err.find("line 1: line is longer than 65536 bytes") != std::string::npos, big.err);
  CHECK(big.out.size() < 1000);
  // claim-batch: the long line is one rejected user; the next line is read
  // as the next user.
  auto r = run_voucherd({"claim-batch", "--campaign", "long", "-", "--database-url", db.url()},
                   std::string(100000, 'x') + "\nu1\n");
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK(r.out.find("user id is longer than 128 characters") != std::string::npos);
  CHECK(db.scalar("SELECT string_agg(user_id, ',') FROM voucher_item WHERE user_id IS NOT NULL") == "u1");
  // enqueue: the long line stays a message too large for the worker, which
  // dead-letters it; it is kept to one byte past the limit.
  r = run_voucherd({"enqueue", "--source", "pg", "--campaign", "long", "-", "--database-url", db.url()},
                   std::string(3 << 20, '{') + "\n" + R"({"user_id":"e1"})" + "\n");
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK(db.scalar("SELECT string_agg(octet_length(body)::text, ',' ORDER BY id) FROM message_queue") ==
        fmt::format("{},34", (1 << 20) + 1));  // e1 with its campaign written in
  // A byte order mark counts toward no line's length: a first line one byte
  // short of the limit is read whole (it counted, and was called too long),
  // and a file of the mark alone is empty.
  r = run_voucherd({"import", "--campaign", "long", "-", "--database-url", db.url()},
                   "\xEF\xBB\xBF" + std::string(65535, 'A') + "\r\n");
  CHECK_MESSAGE(r.err.find("line 1: code is 65535 characters long") != std::string::npos, r.err.substr(0, 300));
  r = run_voucherd({"import", "--campaign", "long", "-", "--database-url", db.url()}, "\xEF\xBB\xBF");
  CHECK_MESSAGE(r.err.find("the file has no codes") != std::string::npos, r.err.substr(0, 300));
}

TEST_CASE("generate adds unique random codes from the unambiguous alphabet") {
  test_database db;
  REQUIRE(run_voucherd({"campaign", "create", "gen", "--database-url", db.url()}).exit_code == 0);
  auto r = run_voucherd({"generate", "--campaign", "gen", "--count", "5000", "--length", "6", "--database-url", db.url()});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK(db.count("SELECT count(DISTINCT code) FROM voucher_item") == 5000);
  CHECK(db.count("SELECT count(*) FROM voucher_item WHERE char_length(code) <> 6") == 0);
  const std::string alphabet{k_code_alphabet};
  CHECK(db.count("SELECT count(*) FROM voucher_item WHERE code !~ '^[" + alphabet + "]+$'") == 0);
  // Every character of the alphabet is used (5000*6 draws from 27 symbols).
  CHECK(db.count("SELECT count(DISTINCT c) FROM voucher_item, regexp_split_to_table(code, '') c") ==
        static_cast<long>(alphabet.size()));
}

TEST_CASE("generate ends with a clear error when the campaign leaves too few unused codes") {
  test_database db;
  REQUIRE(run_voucherd({"campaign", "create", "full", "--database-url", db.url()}).exit_code == 0);
  // Every code of length 4 but 1,000 is in the campaign already.
  const std::string alphabet{k_code_alphabet};
  REQUIRE(db.count(fmt::format(
      "WITH added AS (INSERT INTO voucher_item (campaign_id, code) "
      "SELECT (SELECT id FROM campaign WHERE name = 'full'), code FROM ("
      "  SELECT a || b || c || d AS code FROM unnest(string_to_array('{0}', NULL)) a, "
      "  unnest(string_to_array('{0}', NULL)) b, unnest(string_to_array('{0}', NULL)) c, "
      "  unnest(string_to_array('{0}', NULL)) d ORDER BY 1 OFFSET 1000) t RETURNING 1) "
      "SELECT count(*) FROM added",
      alphabet)) == possible_codes(4) - 1000);
  const auto before = fingerprint(db);
  // 265,000 is within half of the 531,441 possible codes, so the command
  // takes it; the first draws mostly collide, the replacements use up every
  // untried code, and the next round has none left to draw. Before
  // 2026-11-28 that round drew forever at full CPU, holding the campaign's
  // import lock (the timeout turns a hang into a failure here).
  const auto r = run_program({"timeout", "120", VOUCHERD_BIN, "generate", "--campaign", "full", "--count", "265000",
                              "--length", "4", "--database-url", db.url()});
  CHECK_MESSAGE(r.exit_code == k_exit_rejected, r.err.substr(0, 500));
  CHECK_MESSAGE(r.err.find("cannot find unused codes of length 4 for campaign full; use a longer --length") !=
                    std::string::npos,
                r.err.substr(0, 500));
  CHECK(fingerprint(db) == before);
}

TEST_CASE("stats reports the pool, outbox and queue counts") {
  test_database db;
  db.make_campaign("stats", 4);
  REQUIRE(run_voucherd({"claim", "--campaign", "stats", "--user", "a", "--database-url", db.url()}).exit_code == 0);
  auto r = run_voucherd({"stats", "--campaign", "stats", "--database-url", db.url()});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  for (const char* field : {"\"total\":4", "\"claimed\":1", "\"free\":3", "\"outbox_pending\":1", "\"outbox_sent\":0",
                            "\"outbox_failed\":0", "\"queue_pending\":0", "\"dead_letters\":0"})
    CHECK_MESSAGE(r.out.find(field) != std::string::npos, field, " missing in ", r.out);
}

TEST_CASE("every command answers --help") {
  for (const auto& cmd : std::vector<std::vector<std::string>>{
           {"migrate"}, {"campaign", "create"}, {"import"}, {"generate"}, {"claim"}, {"claim-batch"}, {"stats"}, {"story"}}) {
    auto args = cmd;
    args.push_back("--help");
    const auto r = run_voucherd(args);
    CHECK_MESSAGE(r.exit_code == 0, cmd[0], r.err);
    CHECK_MESSAGE(r.out.find("--database-url") != std::string::npos, cmd[0], r.out);
  }
}

TEST_CASE("a refused campaign create still answers with a JSON line on stdout") {
  test_database db;
  REQUIRE(run_voucherd({"campaign", "create", "twice", "--database-url", db.url()}).exit_code == 0);
  const auto r = run_voucherd({"campaign", "create", "twice", "--database-url", db.url()});
  CHECK_MESSAGE(r.exit_code == k_exit_rejected, r.err);
  CHECK_MESSAGE(r.out.find(R"("status":"rejected")") != std::string::npos, "stdout: ", r.out);
  CHECK_MESSAGE(r.out.find("exists already") != std::string::npos, "stdout: ", r.out);
  // A name that is not UTF-8 is echoed as valid JSON (found 2026-11-28: the raw bytes went to stdout).
  const auto bad = run_voucherd({"campaign", "create", "ab\xff\xfe", "--database-url", db.url()});
  CHECK_MESSAGE(bad.exit_code == k_exit_rejected, bad.err);
  boost::system::error_code ec;
  const auto line = boost::json::parse(bad.out, ec);
  REQUIRE_MESSAGE(!ec, "stdout is JSON: ", bad.out);
  CHECK(line.at("campaign").as_string() == "ab\xEF\xBF\xBD\xEF\xBF\xBD");
  // So do import, generate and stats for a campaign that does not exist
  // (before 2026-11-28 they printed nothing on stdout).
  for (std::vector<std::string> args : {std::vector<std::string>{"import", "--campaign", "nope", "-"},
                                        std::vector<std::string>{"generate", "--campaign", "nope", "--count", "5"},
                                        std::vector<std::string>{"stats", "--campaign", "nope"}}) {
    CAPTURE(args.front());
    args.insert(args.end(), {"--database-url", db.url()});
    const auto r = run_voucherd(args, "CODE1\n");
    CHECK_MESSAGE(r.exit_code == k_exit_rejected, r.err);
    ec = {};
    const auto refused = boost::json::parse(r.out, ec);
    REQUIRE_MESSAGE(!ec, "stdout is one JSON line: ", r.out);
    CHECK(refused.at("status").as_string() == "rejected");
    CHECK(refused.at("reason").as_string() == "unknown campaign 'nope'");
  }
}

TEST_CASE("voucherd --version, and a subcommand group called without its subcommand") {
  const auto v = run_voucherd({"--version"});
  CHECK(v.exit_code == 0);
  CHECK_MESSAGE(v.out.rfind("voucherd ", 0) == 0, v.out);
  // Built from a checkout (as CI builds it): the version names the revision.
  const auto rev_file = temp_path("version-rev");
  if (std::system(("git -C '" + std::string{VOUCHERD_SOURCE_DIR} + "' rev-parse --short=12 HEAD >'" + rev_file +
                   "' 2>/dev/null").c_str()) == 0) {
    std::string rev = read_file(rev_file);
    while (!rev.empty() && rev.back() == '\n') rev.pop_back();
    CHECK_MESSAGE(v.out.find("(git " + rev) != std::string::npos, v.out << " names " << rev);
  }
  std::remove(rev_file.c_str());
  const auto c = run_voucherd({"campaign"});
  CHECK(c.exit_code == k_exit_usage);
  CHECK_MESSAGE(c.err.find("needs a subcommand") != std::string::npos, c.err);
  CHECK_MESSAGE(c.err.find("usage error: usage:") == std::string::npos, c.err);
}
