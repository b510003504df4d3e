#pragma once
// How every Postgres connection of voucherd is opened: the operator's URL (or
// libpq's PG* variables) plus the bounds that keep a claim service from
// waiting forever (SPEC I8). Nothing of voucherd waits on the database
// without one of these:
//  - statement_timeout, lock_timeout, idle_in_transaction_session_timeout:
//    enforced by the server, sent as startup options (behind a transaction
//    pooler, set by each transaction instead: see transaction_pooling);
//  - connect_timeout and TCP keepalives: enforced by libpq and the kernel, for
//    a server or a network that went away;
//  - reply_deadline(): enforced by the client, for a backend that stopped
//    answering while its socket stays open (a SIGSTOPped or wedged process,
//    which keepalives cannot see).
// Settings the URL gives explicitly win over these defaults; `options` are
// merged, the URL's last, so its -c settings win too.
#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace voucherd {

struct connection_settings {
  // Defaults for the claim path (claim, claim-batch, worker, notify): a
  // claim takes milliseconds, so seconds mean something is wrong.
  static constexpr std::chrono::milliseconds k_claim_statement_timeout{5000};
  static constexpr std::chrono::milliseconds k_claim_lock_timeout{2000};
  // Defaults for maintenance (migrate, import, generate): a large import may
  // run for minutes and may queue behind another import's lock.
  static constexpr std::chrono::milliseconds k_maintenance_statement_timeout{0};
  static constexpr std::chrono::milliseconds k_maintenance_lock_timeout{30000};
  static constexpr std::chrono::milliseconds k_default_idle_in_transaction_timeout{10000};
  static constexpr std::chrono::milliseconds k_default_connect_timeout{5000};
  // TCP keepalives: a dead peer is noticed after about idle + interval * count.
  static constexpr int k_keepalives_idle_s = 10;
  static constexpr int k_keepalives_interval_s = 5;
  static constexpr int k_keepalives_count = 3;
  // How much longer than statement_timeout the client waits for a reply
  // before it gives the connection up.
  static constexpr std::chrono::milliseconds k_reply_margin{2000};

  std::string url;  // "" = libpq's PG* variables
  // The URL reaches Postgres through a transaction-pooling PgBouncer: no
  // named prepared statements (each statement goes unnamed), no session
  // state, no LISTEN on it (listen_url is used for that, or a poll).
  bool pooled = false;
  // A URL straight to Postgres for LISTEN (a session-level feature no
  // transaction pooler keeps); "" = url when not pooled, else poll. What it
  // leaves out (database, user, password) is taken from url, so
  // "postgresql://db-primary:5432" is enough.
  std::string listen_url;
  std::string application_name = "voucherd";
  // 0 disables a timeout (then the server default applies: none).
  std::chrono::milliseconds statement_timeout = k_claim_statement_timeout;
  std::chrono::milliseconds lock_timeout = k_claim_lock_timeout;
  std::chrono::milliseconds idle_in_transaction_timeout = k_default_idle_in_transaction_timeout;
  std::chrono::milliseconds connect_timeout = k_default_connect_timeout;

  // The libpq connection string: the URL's settings merged with the above
  // (when pooled, without our startup options: the pooler refuses them).
  // Throws voucherd_error(usage) when the URL cannot be parsed.
  std::string conninfo() const;
  // The connection string for LISTEN: conninfo() when not pooled, else
  // listen_url's (a direct connection, startup options and all), else ""
  // (nothing to listen on: poll).
  std::string listen_conninfo() const;
  // How long the client waits for the reply to any one statement: the
  // statement timeout the server applies (the URL's or PGOPTIONS' own, when
  // they set one) plus k_reply_margin; 0 = forever (statement_timeout off).
  std::chrono::milliseconds reply_deadline() const;

 private:
  // Every setting by libpq keyword: the URL's, then libpq's environment,
  // then ours.
  std::map<std::string, std::string> merged() const;
};

// The client-side bounds of an asynchronous connection (pg_connection); zero
// = no bound.
struct pg_deadlines {
  std::chrono::milliseconds connect = connection_settings::k_default_connect_timeout;
  std::chrono::milliseconds reply = connection_settings::k_claim_statement_timeout + connection_settings::k_reply_margin;

  static pg_deadlines of(const connection_settings& s) { return {s.connect_timeout, s.reply_deadline()}; }
};

// What a connection does for itself behind a transaction-pooling PgBouncer
// (connection_settings::pooled), where a server session is ours for one
// transaction only and the startup parameter `options` is refused
// ("unsupported startup parameter: options"; with ignore_startup_parameters
// = options it is dropped in silence, so the bounds would be lost):
//  - statements go unnamed (Parse/Bind/Execute of the text each time), never
//    prepared under a name: a name prepared on one server connection is
//    missing on the next and "already exists" on one another client used;
//  - the server-side bounds are set by every transaction, transaction-local
//    (set_config(..., true), sql/transaction_bounds.sql), so they never leak
//    into another client's transaction. pg_connection sends the statement at
//    the head of the pipeline that opens a transaction (before a deferred
//    BEGIN, which turns the pipeline's implicit transaction into the explicit
//    one and keeps the local settings): no extra round trip. The libpqxx
//    sessions (db_session: campaign, import, generate, stats, enqueue,
//    notify) do not: behind a pooler they run under the role's or the
//    database's own settings (ALTER ROLE ... SET statement_timeout = ...);
//  - LISTEN goes to listen_conninfo, a separate direct connection, or, when
//    there is none, the waits for a NOTIFY become polls.
// A direct connection (enabled = false) does none of this and pays nothing:
// its bounds travel once, as startup options, and its statements are
// prepared once per connection.
struct transaction_pooling {
  bool enabled = false;
  std::chrono::milliseconds statement_timeout{0};
  std::chrono::milliseconds lock_timeout{0};
  std::chrono::milliseconds idle_in_transaction_timeout{0};
  std::string listen_conninfo;  // "" = poll

  static transaction_pooling of(const connection_settings& s);
  // The parameters of sql/transaction_bounds.sql, in milliseconds.
  std::vector<std::string> bounds() const;
};

}  // namespace voucherd
