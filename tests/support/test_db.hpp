#pragma once
// Test fixtures: each test owns a fresh database on the throwaway server that
// scripts/test started (VOUCHERD_TEST_ADMIN_URL), and can run the real
// voucherd binary as a subprocess.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "db/connection_settings.hpp"

namespace voucherd::test {

// postgresql://postgres@127.0.0.1:PORT/postgres, from the environment.
std::string admin_url();

// Through a transaction-pooling PgBouncer (the `pooler` label of ctest):
// VOUCHERD_TEST_THROUGH_POOLER=1 makes every test_database hand out a URL
// through the pooler at VOUCHERD_TEST_POOLER_URL (postgresql://...:PORT/postgres,
// started by scripts/test), and every spawned voucherd run with
// VOUCHERD_TRANSACTION_POOLER=1 and VOUCHERD_LISTEN_URL = the server itself.
bool through_pooler();
// VOUCHERD_TEST_POOLER_URL; throws when it is not set.
std::string pooler_admin_url();
// The server itself without a database name (postgresql://postgres@HOST:PORT),
// a --listen-url for any test database.
std::string direct_server_url();

// The voucherd binary under test: $VOUCHERD_TEST_BIN when set (to run the
// same tests against another build, e.g. an older commit's), else this build's.
const char* voucherd_bin();

// A database created for one test (named vd_<random>), migrated unless told
// otherwise, dropped (with its connections) when the object dies.
class test_database {
 public:
  explicit test_database(bool migrate = true);
  ~test_database();
  test_database(const test_database&) = delete;
  test_database& operator=(const test_database&) = delete;

  // The URL a test gives voucherd: through the pooler when through_pooler().
  const std::string& url() const { return url_; }
  // Straight to the server, whatever the label: for the test's own checks.
  const std::string& direct_url() const { return direct_url_; }
  // Through the pooler, whatever the label (pooler_admin_url() must be set).
  std::string pooled_url() const;
  // What an in-process connection to url() must do (enabled when
  // through_pooler()), with the default claim bounds.
  transaction_pooling pooling() const;
  const std::string& name() const { return name_; }
  // A direct connection (the test's own checks and set-up).
  std::unique_ptr<pqxx::connection> connect() const;

  // One value of a query (parameterless, test-only SQL), as text ("" for NULL).
  std::string scalar(const std::string& query) const;
  std::int64_t count(const std::string& query) const;

  // Creates a campaign holding `codes` codes named <prefix>00001.. (prefix
  // defaults to the campaign name upper-cased and cut to 8 characters).
  void make_campaign(const std::string& campaign, int codes) const;

 private:
  std::string name_;
  std::string url_;
  std::string direct_url_;
};

struct run_result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs build/voucherd with args (and DATABASE_URL unset unless given in env);
// feeds `input` on stdin; waits and captures stdout/stderr.
run_result run_voucherd(const std::vector<std::string>& args, const std::string& input = {},
                        const std::map<std::string, std::string>& env = {});

// Where a spawned voucherd reads and writes: stdin from a file, or from a
// descriptor (the read end of a pipe, closed in the caller by the caller),
// else /dev/null; stdout and stderr to files (created or truncated), else
// /dev/null.
struct child_io {
  std::string stdin_path;
  int stdin_fd = -1;
  std::string stdout_path;
  std::string stderr_path;
};

// Starts voucherd without waiting; returns the pid. Its environment is the
// test's, less DATABASE_URL, plus `env`.
int spawn_voucherd(const std::vector<std::string>& args, const child_io& io,
                   const std::map<std::string, std::string>& env = {});
// The same with stdin from /dev/null and output to the files given.
int spawn_voucherd(const std::vector<std::string>& args, const std::string& stdout_path = {},
                   const std::string& stderr_path = {}, const std::map<std::string, std::string>& env = {});
// Waits for a spawned process; returns its exit code (128+signal if killed).
int wait_exit(int pid);
// Whether a spawned process has not exited yet. Does not reap it: its exit
// status stays for wait_exit.
bool still_running(int pid);

// Lines of a text, without the trailing empty one.
std::vector<std::string> lines_of(const std::string& text);

// Audits I1-I3 of one campaign from the database; returns one message per
// violation found (empty = all hold):
//  - a user owning more than one voucher of the campaign (I2)
//  - an owner without exactly one outbox row for (voucher, owner) (I3)
//  - an outbox row for a user who does not own that voucher (I1/I3)
std::vector<std::string> audit_campaign(pqxx::connection& conn, const std::string& campaign);

// The problems of an audit, one per line, for a check's message.
std::string describe(const std::vector<std::string>& problems);

}  // namespace voucherd::test
