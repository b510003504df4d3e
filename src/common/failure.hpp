#pragma once
// Failures are typed once, at the boundary, into the few kinds a caller can act
// on. Exit statuses (sysexits) and HTTP statuses derive from this one map.
#include <stdexcept>
#include <string>

namespace voucherd {

enum class failure_kind {
  usage,      // the call itself is wrong: fix the call            (exit 64)
  rejected,   // bad input, unknown or inactive campaign: dead-letter (exit 65)
  transient,  // database/Redis unreachable, retries exhausted: retry later (exit 75)
  internal,   // a bug or an unexpected server error                (exit 70)
  config,     // the set-up is wrong: unknown database or role, failed
              // authentication or certificate check, schema missing or
              // older than this binary, a missing grant: fix the
              // configuration, a retry cannot help               (exit 78)
};

inline constexpr int k_exit_ok = 0;
inline constexpr int k_exit_sold_out = 3;
inline constexpr int k_exit_usage = 64;
inline constexpr int k_exit_rejected = 65;
inline constexpr int k_exit_internal = 70;
inline constexpr int k_exit_transient = 75;
inline constexpr int k_exit_config = 78;

int exit_code_for(failure_kind kind);
const char* to_string(failure_kind kind);

class voucherd_error : public std::runtime_error {
 public:
  voucherd_error(failure_kind kind, const std::string& what)
      : std::runtime_error{what}, kind_{kind} {}
  failure_kind kind() const noexcept { return kind_; }

 private:
  failure_kind kind_;
};

// The one map from a SQLSTATE to a failure kind (db/classify.hpp applies it
// to libpqxx's exceptions, db/pg_connection.cpp to libpq's results).
// Transient: connection (08), rollback (40), resources (53), operator
// intervention and timeouts (57: statement_timeout, shutdown), system (58),
// and lock_not_available (55P03: lock_timeout ran out). A retry later can
// change the outcome of all of these; of nothing else. Rejected: data
// exceptions (22), integrity violations (23) and P0001 (RAISE EXCEPTION).
// Config: an unknown database (3D000) or schema (3F000), failed
// authorization (28), a missing table or function (42P01, 42883: the schema
// is not migrated) and a missing privilege (42501).
failure_kind classify_sqlstate(const std::string& sqlstate);

// A connection that could not be opened, by libpq's message (libpq gives no
// SQLSTATE for it): config when the server or libpq refused the set-up (no
// such database or role, authentication or certificate failed, an
// unreadable URL or certificate file), transient otherwise (refused,
// unreachable, timed out, the server starting up or shutting down).
failure_kind classify_connect_failure(const std::string& libpq_message);
// What to tell an operator about a failure of kind config, by SQLSTATE (or
// "" for a connection failure): e.g. "run `voucherd migrate`" for a missing
// table. Empty when there is nothing to add.
std::string config_hint(const std::string& sqlstate, const std::string& message);

// The one retry rule of the claim path: whether running the failed
// transaction again at once (no backoff) is expected to succeed. True for a
// serialization failure (40001), a deadlock (40P01), and a unique violation
// (23505) on voucher_item_owner_key: a concurrent delivery for the same user
// committed first (the unique check waited for it), so the next attempt
// answers already_claimed with its code; or on message_outcome_pkey: a
// concurrent first use of the same message id committed first, so the next
// attempt sees it (a redelivery, or a reused id rejected). Other transient
// failures are retried after a backoff; the rest are not retried.
bool retry_at_once(const std::string& sqlstate, const std::string& constraint);

// Whether a database error is about the message rather than the database:
// a data exception (22), an integrity violation (23) other than a racing
// duplicate of the same user, or an exception a trigger or function raised
// (P0001, e.g. an operator refusing a user). Only such an error makes a
// message poison; a database that is read-only, lacks a table or a
// permission, or fails internally fails every message alike.
bool refuses_message(const std::string& sqlstate, const std::string& constraint);
// statement_timeout (57014) or lock_timeout (55P03) ran out: the database is
// slow or a lock is held, or this message's claim is what is slow.
bool is_timeout(const std::string& sqlstate);

// The name of the index that makes a second claim of the same user fail.
inline constexpr const char* k_owner_constraint = "voucher_item_owner_key";
// The key that makes a second first use of a (source, message id) fail.
inline constexpr const char* k_outcome_constraint = "message_outcome_pkey";

}  // namespace voucherd
