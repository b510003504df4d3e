// The one failure map (common/failure.hpp): a database error's SQLSTATE
// becomes a failure kind once, at the boundary; the exit statuses
// (sysexits, SPEC section 4) and the HTTP statuses (SPEC section 5) derive
// from the kind or the outcome. No database needed.
#include <doctest/doctest.h>

#include <string>

#include "claim/claim_outcome.hpp"
#include "common/failure.hpp"
#include "http/http_server.hpp"

using namespace voucherd;

namespace {

claim_outcome outcome_of(claim_status status) {
  claim_outcome o;
  o.status = status;
  return o;
}

claim_reply reply_with(claim_status status) {
  claim_reply r;
  r.outcome = outcome_of(status);
  return r;
}

claim_reply reply_failed(failure_kind kind) {
  claim_reply r;
  r.failure = kind;
  return r;
}

}  // namespace

TEST_CASE("each failure kind has its exit status") {
  CHECK_MESSAGE(exit_code_for(failure_kind::usage) == 64, "usage: EX_USAGE");
  CHECK_MESSAGE(exit_code_for(failure_kind::rejected) == 65, "rejected: EX_DATAERR");
  CHECK_MESSAGE(exit_code_for(failure_kind::internal) == 70, "internal: EX_SOFTWARE");
  CHECK_MESSAGE(exit_code_for(failure_kind::transient) == 75, "transient: EX_TEMPFAIL, retry later");
  for (const auto kind : {failure_kind::usage, failure_kind::rejected, failure_kind::transient, failure_kind::internal})
    CHECK_MESSAGE(std::string{to_string(kind)}.size() > 0, "every kind has a name for logs and answers");
  CHECK_MESSAGE(std::string{to_string(failure_kind::transient)} == "transient", "the name is the kind's");
}

TEST_CASE("each outcome has its exit status: 0 for a voucher, 3 sold out, 65 rejected") {
  CHECK_MESSAGE(exit_code_for(outcome_of(claim_status::claimed)) == k_exit_ok, "claimed: 0");
  CHECK_MESSAGE(exit_code_for(outcome_of(claim_status::already_claimed)) == k_exit_ok, "already_claimed: 0");
  CHECK_MESSAGE(exit_code_for(outcome_of(claim_status::sold_out)) == 3, "sold_out: 3, an answer and not a failure");
  CHECK_MESSAGE(exit_code_for(outcome_of(claim_status::rejected)) == exit_code_for(failure_kind::rejected),
                "a rejected outcome exits as a rejected failure does");
}

TEST_CASE("the HTTP status derives from the outcome and the failure kind") {
  CHECK_MESSAGE(http_status_for(reply_with(claim_status::claimed)) == 200, "claimed");
  CHECK_MESSAGE(http_status_for(reply_with(claim_status::already_claimed)) == 200, "already_claimed");
  CHECK_MESSAGE(http_status_for(reply_with(claim_status::sold_out)) == 409, "sold_out");
  CHECK_MESSAGE(http_status_for(reply_with(claim_status::rejected)) == 422, "rejected");
  claim_reply malformed;
  malformed.malformed = true;
  CHECK_MESSAGE(http_status_for(malformed) == 400, "malformed");
  CHECK_MESSAGE(http_status_for(reply_failed(failure_kind::transient)) == 503, "transient: retry later");
  CHECK_MESSAGE(http_status_for(reply_failed(failure_kind::internal)) == 500, "internal");
  CHECK_MESSAGE(http_status_for(reply_failed(failure_kind::config)) == 503, "config: not this request's fault");
  CHECK_MESSAGE(http_status_for(claim_reply{}) == 500, "a reply with nothing in it is a bug");
}

TEST_CASE("a SQLSTATE is transient when a retry later can change the outcome, rejected when the input is bad") {
  struct row {
    const char* sqlstate;
    failure_kind kind;
    const char* what;
  };
  for (const auto& r : std::vector<row>{
           {"08006", failure_kind::transient, "connection failure"},
           {"40001", failure_kind::transient, "serialization failure"},
           {"40P01", failure_kind::transient, "deadlock"},
           {"53300", failure_kind::transient, "too many connections"},
           {"57014", failure_kind::transient, "statement timeout (query canceled)"},
           {"57P01", failure_kind::transient, "admin shutdown"},
           {"58030", failure_kind::transient, "I/O error"},
           {"55P03", failure_kind::transient, "lock timeout"},
           {"22001", failure_kind::rejected, "string too long"},
           {"22P02", failure_kind::rejected, "invalid text representation"},
           {"23505", failure_kind::rejected, "unique violation"},
           {"P0001", failure_kind::rejected, "RAISE EXCEPTION of a trigger"},
           {"42P01", failure_kind::config, "undefined table: the schema is not migrated"},
           {"42883", failure_kind::config, "undefined function: the schema is older than the binary"},
           {"42501", failure_kind::config, "insufficient privilege: a grant is missing"},
           {"3D000", failure_kind::config, "unknown database"},
           {"28P01", failure_kind::config, "password authentication failed"},
           {"25006", failure_kind::internal, "read-only transaction"},
           {"55000", failure_kind::internal, "object not in prerequisite state (not a lock timeout)"},
           {"XX000", failure_kind::internal, "internal error"},
           {"", failure_kind::internal, "no SQLSTATE at all"},
           {"0800", failure_kind::internal, "a malformed SQLSTATE"},
       }) {
    CAPTURE(r.sqlstate);
    CHECK_MESSAGE(classify_sqlstate(r.sqlstate) == r.kind,
                  r.what << " (" << r.sqlstate << ") is " << to_string(r.kind) << ", got "
                         << to_string(classify_sqlstate(r.sqlstate)));
  }
}

TEST_CASE("what is retried at once, what blames the message, what is a timeout") {
  CHECK_MESSAGE(retry_at_once("40001", ""), "a serialization failure is retried at once");
  CHECK_MESSAGE(retry_at_once("40P01", ""), "a deadlock is retried at once");
  CHECK_MESSAGE(retry_at_once("23505", k_owner_constraint),
                "a racing duplicate of the same user is retried at once (it then answers already_claimed)");
  CHECK_MESSAGE(retry_at_once("23505", k_outcome_constraint),
                "a racing first use of the same message id is retried at once (it then sees the first)");
  CHECK_MESSAGE(!retry_at_once("23505", "voucher_item_code_key"), "another unique violation is not");
  CHECK_MESSAGE(!retry_at_once("08006", ""), "a lost connection waits for a backoff first");

  CHECK_MESSAGE(refuses_message("P0001", ""), "a trigger's exception is about the message (poison)");
  CHECK_MESSAGE(refuses_message("22P02", ""), "bad data is about the message");
  CHECK_MESSAGE(!refuses_message("23505", k_owner_constraint), "a racing duplicate is not poison");
  CHECK_MESSAGE(!refuses_message("23505", k_outcome_constraint), "nor is a racing first use of a message id");
  CHECK_MESSAGE(!refuses_message("25006", ""), "a read-only database fails every message alike");
  CHECK_MESSAGE(!refuses_message("08006", ""), "a lost connection is not the message's fault");

  CHECK_MESSAGE(is_timeout("57014"), "statement_timeout");
  CHECK_MESSAGE(is_timeout("55P03"), "lock_timeout");
  CHECK_MESSAGE(!is_timeout("57P01"), "a shutdown is transient but no timeout");
}

TEST_CASE("a connection that cannot be opened is config when the set-up is wrong, transient when a retry can help") {
  struct row {
    const char* message;
    failure_kind kind;
  };
  for (const auto& r : std::vector<row>{
           {R"(connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "shop" does not exist)",
            failure_kind::config},
           {R"(connection to server at "127.0.0.1", port 5432 failed: FATAL:  role "app" does not exist)",
            failure_kind::config},
           {R"(connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication failed for user "app")",
            failure_kind::config},
           {"connection to server at \"db\" failed: fe_sendauth: no password supplied", failure_kind::config},
           {R"(connection to server at "db", port 5432 failed: server certificate for "db" does not match host name "x")",
            failure_kind::config},
           {R"(invalid integer value "zz" for connection option "port")", failure_kind::config},
           // A misspelled or refused -c setting: no retry fixes it (found 2026-11-28: it was 75, and a
           // worker retried it forever).
           {R"(connection to server at "db", port 5432 failed: FATAL:  unrecognized configuration parameter "statment_timeout")",
            failure_kind::config},
           {R"(connection to server at "db", port 5432 failed: FATAL:  parameter "shared_buffers" cannot be changed without restarting the server)",
            failure_kind::config},
           {R"(connection to server at "db", port 5432 failed: FATAL:  invalid value for parameter "statement_timeout": "1x")",
            failure_kind::config},
           {"connection to server at \"127.0.0.1\", port 5432 failed: Connection refused\n\tIs the server running",
            failure_kind::transient},
           {R"(connection to server at "127.0.0.1", port 5432 failed: FATAL:  the database system is starting up)",
            failure_kind::transient},
           {R"(connection to server at "127.0.0.1", port 5432 failed: FATAL:  sorry, too many clients already)",
            failure_kind::transient},
           {"timed out", failure_kind::transient},
       }) {
    CAPTURE(r.message);
    CHECK(classify_connect_failure(r.message) == r.kind);
  }
  CHECK(config_hint("42P01", "").find("voucherd migrate") != std::string::npos);
  CHECK(config_hint("", R"(FATAL:  unrecognized configuration parameter "statment_timeout")").find("PGOPTIONS") !=
        std::string::npos);
  CHECK(config_hint("", R"(FATAL:  database "shop" does not exist)").find("database name") != std::string::npos);
  CHECK(config_hint("", R"(FATAL:  role "app" does not exist)").find("role") != std::string::npos);
}
