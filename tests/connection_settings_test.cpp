// How every connection is opened (SPEC I8): the operator's URL or libpq's
// environment, merged with the bounds that keep a claim from waiting
// forever. No database needed: libpq parses the strings.
#include <doctest/doctest.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <libpq-fe.h>

#include "common/failure.hpp"
#include "db/connection_settings.hpp"

using namespace voucherd;
using namespace std::chrono_literals;

namespace {

// One keyword of a connection string, as libpq reads it ("" when absent).
std::string setting(const std::string& conninfo, const std::string& key) {
  char* error = nullptr;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> parsed{PQconninfoParse(conninfo.c_str(), &error),
                                                                       &PQconninfoFree};
  REQUIRE_MESSAGE(parsed, "libpq reads what conninfo() wrote: " << conninfo << " " << (error ? error : ""));
  for (auto* o = parsed.get(); o->keyword; ++o)
    if (key == o->keyword && o->val) return o->val;
  return "";
}

// Sets an environment variable for one scope.
struct scoped_env {
  scoped_env(const char* name, const char* value) : name_{name} { ::setenv(name, value, 1); }
  ~scoped_env() { ::unsetenv(name_); }
  const char* name_;
};

}  // namespace

TEST_CASE("the bounds go to the server as startup options, with keepalives and a connect timeout") {
  connection_settings s;
  s.url = "postgresql://app@db.internal:6432/vouchers";
  s.application_name = "voucherd-worker";
  s.statement_timeout = 5000ms;
  s.lock_timeout = 2000ms;
  const auto c = s.conninfo();
  CHECK(setting(c, "host") == "db.internal");
  CHECK(setting(c, "port") == "6432");
  CHECK(setting(c, "dbname") == "vouchers");
  CHECK(setting(c, "user") == "app");
  CHECK(setting(c, "application_name") == "voucherd-worker");
  CHECK(setting(c, "connect_timeout") == "5");
  CHECK(setting(c, "keepalives") == "1");
  const auto options = setting(c, "options");
  CHECK_MESSAGE(options.find("-c statement_timeout=5000") != std::string::npos, options);
  CHECK_MESSAGE(options.find("-c lock_timeout=2000") != std::string::npos, options);
  CHECK_MESSAGE(options.find("-c idle_in_transaction_session_timeout=10000") != std::string::npos, options);
  CHECK(s.reply_deadline() == 5000ms + connection_settings::k_reply_margin);
}

TEST_CASE("what the URL says wins: its own settings, and its options after ours") {
  connection_settings s;
  s.url = "host=127.0.0.1 dbname=x application_name='my app' connect_timeout=9 options='-c statement_timeout=60s'";
  const auto c = s.conninfo();
  CHECK(setting(c, "application_name") == "my app");
  CHECK(setting(c, "connect_timeout") == "9");
  const auto options = setting(c, "options");
  CHECK_MESSAGE(options.find("-c statement_timeout=5000") < options.find("statement_timeout=60s"), options);
  // The client waits as long as the server will, not as long as our default.
  CHECK(s.reply_deadline() == 60000ms + connection_settings::k_reply_margin);
}

TEST_CASE("the client deadline reads statement_timeout as the server does: fractions, every unit, its int range") {
  // What Postgres 15 answers to SET statement_timeout = ... then SHOW it.
  const std::vector<std::pair<std::string, std::chrono::milliseconds>> cases{
      {"1d", 86'400'000ms},       {"1.5min", 90'000ms}, {"1.5s", 1500ms}, {"2h", 7'200'000ms},
      {"600us", 1ms},             {"1e3", 1000ms},      {"250", 250ms},   {"2147483647", 2'147'483'647ms},
  };
  for (const auto& [value, want] : cases) {
    connection_settings s;
    s.url = fmt::format("host=127.0.0.1 dbname=x options='-c statement_timeout={}'", value);
    CHECK_MESSAGE(s.reply_deadline() == want + connection_settings::k_reply_margin, value);
  }
  // Rounded to no milliseconds: off, and so no client deadline.
  connection_settings off;
  off.url = "host=127.0.0.1 dbname=x options='-c statement_timeout=250us'";
  CHECK(off.reply_deadline() == 0ms);
  // Past the int range the server refuses the value (and the connection);
  // reading it is no reason to fail here, and the setting before it stands.
  connection_settings huge;
  huge.url = "host=127.0.0.1 dbname=x options='-c statement_timeout=99999999999999999999'";
  CHECK(huge.reply_deadline() == 5000ms + connection_settings::k_reply_margin);
}

TEST_CASE("libpq's environment stands where the URL is silent") {
  scoped_env options{"PGOPTIONS", "-c search_path=vouchers"};
  scoped_env app{"PGAPPNAME", "from-env"};
  connection_settings s;  // empty URL: libpq's PG* variables
  const auto c = s.conninfo();
  CHECK(setting(c, "application_name") == "from-env");
  const auto merged = setting(c, "options");
  CHECK_MESSAGE(merged.find("-c search_path=vouchers") != std::string::npos, merged);
  CHECK_MESSAGE(merged.find("-c statement_timeout=") != std::string::npos, merged);
}

TEST_CASE("quotes and backslashes in values survive") {
  connection_settings s;
  s.url = R"(host=127.0.0.1 password='it\'s a \\ secret')";
  CHECK(setting(s.conninfo(), "password") == R"(it's a \ secret)");
}

TEST_CASE("a URL libpq cannot read is a configuration error (SPEC section 4: bad URL, 78), not a transient one") {
  connection_settings s;
  s.url = "postgresql://user:pw@[::1";
  try {
    (void)s.conninfo();
    FAIL("conninfo() accepted an unreadable URL");
  } catch (const voucherd_error& e) {
    CHECK(e.kind() == failure_kind::config);
    CHECK_MESSAGE(std::string{e.what()}.find("pw") == std::string::npos, e.what());
  }
}

TEST_CASE("statement_timeout 0 means no client deadline either") {
  connection_settings s;
  s.statement_timeout = 0ms;
  CHECK(s.reply_deadline() == 0ms);
}

TEST_CASE("behind a transaction pooler no startup options go out; the bounds travel per transaction instead") {
  connection_settings s;
  s.url = "postgresql://app@pooler:6432/vouchers";
  s.pooled = true;
  s.lock_timeout = 300ms;
  const auto c = s.conninfo();
  CHECK_MESSAGE(setting(c, "options").empty(), "PgBouncer refuses the startup parameter options: " << c);
  CHECK(setting(c, "keepalives") == "1");
  const auto pooling = transaction_pooling::of(s);
  CHECK(pooling.enabled);
  CHECK(pooling.bounds() == std::vector<std::string>{"5000", "300", "10000"});
  CHECK_MESSAGE(pooling.listen_conninfo.empty(), "no --listen-url: a pooled worker polls");
  CHECK_FALSE(transaction_pooling::of(connection_settings{}).enabled);
}

TEST_CASE("--listen-url takes what it leaves out from the URL, and is a direct connection with the bounds") {
  connection_settings s;
  s.url = "postgresql://app:secret@pooler:6432/vouchers";
  s.pooled = true;
  s.listen_url = "postgresql://db-primary:5432";
  const auto l = s.listen_conninfo();
  CHECK(setting(l, "host") == "db-primary");
  CHECK(setting(l, "port") == "5432");
  CHECK(setting(l, "dbname") == "vouchers");
  CHECK(setting(l, "user") == "app");
  CHECK(setting(l, "password") == "secret");
  CHECK_MESSAGE(setting(l, "options").find("-c statement_timeout=5000") != std::string::npos, l);
  s.pooled = false;
  CHECK_MESSAGE(s.listen_conninfo() == s.conninfo(), "a direct worker listens on its own connections");
}
