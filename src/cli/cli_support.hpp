#pragma once
// What every subcommand shares: the --database-url/--help options, JSON lines
// on stdout, human messages on stderr, and the map from failures to exit codes.
#include <exception>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <boost/json/object.hpp>
#include <boost/program_options.hpp>

#include "common/failure.hpp"
#include "db/connection_settings.hpp"
#include "db/session.hpp"

namespace voucherd::cli {

namespace po = boost::program_options;

using args = std::vector<std::string>;

// What the options every subcommand takes were given as (nullopt: not given;
// a negative number given is refused, not taken for "not given").
struct common_flags {
  std::string database_url;
  std::string database_url_file;
  bool transaction_pooler = false;
  std::string listen_url;
  std::optional<long> statement_timeout_ms;
  std::optional<long> lock_timeout_ms;
  std::optional<long> idle_in_transaction_timeout_ms;
  std::optional<long> connect_timeout_ms;
};

// Which defaults a command's connections get (db/connection_settings.hpp).
enum class db_profile { claim, maintenance };

struct common_options {
  // --database-url, else $DATABASE_URL, else "" (libpq's PG* variables),
  // merged with the timeouts into one libpq connection string.
  std::string database_url;
  connection_settings db;
  transaction_pooling pooling;  // transaction_pooling::of(db)
};

// Options every subcommand takes; add them to a description with add_common().
void add_common(po::options_description& desc, common_flags& flags);
// Flags, else VOUCHERD_* environment variables, else the profile's defaults.
// `command` names the connections (application_name voucherd-<command>).
// Throws voucherd_error(usage) for a negative timeout or an unreadable URL.
common_options resolve_common(const common_flags& flags, std::string_view command,
                              db_profile profile = db_profile::claim);

// The environment variable `name` as a whole decimal number; nullopt when it
// is unset or empty. Throws voucherd_error(usage), naming the variable and
// its value, when it is not `what` ("a number", "a number of milliseconds")
// or lies outside min..max (the range of the type it is stored in; the
// setting's own range is checked after, with the flag's message).
std::optional<long> env_long(const char* name, std::string_view what,
                             long min = std::numeric_limits<long>::min(),
                             long max = std::numeric_limits<long>::max());

// Opens FILE into `file`, or returns stdin for "-". Throws
// voucherd_error(usage) "cannot open FILE" (a directory included).
std::istream& open_input(const std::string& path, std::ifstream& file);

// The first line of a file that holds a secret (a URL with a password, a
// token), without surrounding blanks. `what` names it in messages ("database
// URL" -> "cannot read the database URL file PATH"); the content is never
// echoed. Throws voucherd_error(config) when unreadable or empty.
std::string read_secret_line(const std::string& path, std::string_view what);
// A libpqxx session on the command's database: statements prepared, or,
// behind a transaction pooler, run unnamed.
db_session open_session(const common_options& o);
// The same for migrate, whose advisory lock is held across transactions (a
// session a transaction pooler does not keep): behind one it goes to
// --listen-url, the direct URL, and without one it is refused (config).
db_session open_migration_session(const common_options& o);

// Parses `a` against desc (+ positional names, in order). Prints help and
// returns false on --help. Throws voucherd_error(usage) on a bad call.
bool parse(const args& a, const std::string& usage, po::options_description& desc,
           const std::vector<std::string>& positional, po::variables_map& vm);

void print_json(const boost::json::object& line);
void print_line(const std::string& json_line);

// Human messages go to stderr, prefixed with "voucherd: ".
void say(const std::string& message);

// A command refused for its campaign (unknown, not a slug, a name taken):
// one rejected line on stdout, the campaign as given echoed as valid UTF-8,
// the reason on stderr. Returns k_exit_rejected.
int answer_rejected(const std::string& campaign, const std::exception& refusal);
// Runs `work` (which returns the exit status); a voucherd_error(rejected) it
// throws is answered with answer_rejected, anything else passes through.
template <typename Work>
int answering_refusals(const std::string& campaign, Work&& work) {
  try {
    return work();
  } catch (const voucherd_error& e) {
    if (e.kind() != failure_kind::rejected) throw;
    return answer_rejected(campaign, e);
  }
}

// The path of this voucherd binary, for commands that start more of it
// (story's workers, bench's pods).
std::string self_executable();

}  // namespace voucherd::cli
