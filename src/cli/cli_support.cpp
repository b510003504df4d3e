#include "cli/cli_support.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "claim/claim_request.hpp"
#include "common/failure.hpp"
#include "db/schema_check.hpp"

namespace voucherd::cli {

void add_common(po::options_description& desc, common_flags& flags) {
  desc.add_options()
      ("database-url", po::value(&flags.database_url),
       "Postgres URL; default: $DATABASE_URL, then libpq's PG* variables. "
       "Prefer PGPASSWORD or PGPASSFILE for the password, or --database-url-file.")
      ("database-url-file", po::value(&flags.database_url_file),
       "read the Postgres URL from this file (env VOUCHERD_DATABASE_URL_FILE), so that a password "
       "in it never appears in argv or the environment")
      ("transaction-pooler", po::bool_switch(&flags.transaction_pooler),
       "the URL goes through a transaction-pooling PgBouncer: unnamed statements only, LISTEN only "
       "on --listen-url (env VOUCHERD_TRANSACTION_POOLER=1)")
      ("listen-url", po::value(&flags.listen_url),
       "a URL straight to Postgres for LISTEN (and migrate) when the main one is pooled; what it leaves "
       "out (database, user, password) comes from the main URL; without it a pooled worker polls "
       "(env VOUCHERD_LISTEN_URL)")
      ("statement-timeout-ms", po::value<long>()->notifier([&flags](long v) { flags.statement_timeout_ms = v; }),
       "server-side bound on each statement, 0 = none (env VOUCHERD_STATEMENT_TIMEOUT_MS; "
       "default 5000, 0 for migrate/import/generate)")
      ("lock-timeout-ms", po::value<long>()->notifier([&flags](long v) { flags.lock_timeout_ms = v; }),
       "bound on each lock wait, 0 = none; a claim that runs out is transient "
       "(env VOUCHERD_LOCK_TIMEOUT_MS; default 2000, 30000 for migrate/import/generate)")
      ("idle-in-transaction-timeout-ms", po::value<long>()->notifier([&flags](long v) { flags.idle_in_transaction_timeout_ms = v; }),
       "the server ends a session idle inside a transaction this long, 0 = never "
       "(env VOUCHERD_IDLE_IN_TRANSACTION_TIMEOUT_MS; default 10000)")
      ("connect-timeout-ms", po::value<long>()->notifier([&flags](long v) { flags.connect_timeout_ms = v; }),
       "bound on opening a connection (env VOUCHERD_CONNECT_TIMEOUT_MS; default 5000)")
      ("help,h", "show this help");
}

std::istream& open_input(const std::string& path, std::ifstream& file) {
  if (path == "-") return std::cin;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw voucherd_error{failure_kind::usage, fmt::format("cannot open {}: it is a directory", path)};
  file.open(path, std::ios::binary);
  if (!file) throw voucherd_error{failure_kind::usage, fmt::format("cannot open {}", path)};
  return file;
}

std::optional<long> env_long(const char* name, std::string_view what, long min, long max) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || end == v)
    throw voucherd_error{failure_kind::usage, fmt::format("{} must be {}, got '{}'", name, what, v)};
  if (errno == ERANGE || n < min || n > max)
    throw voucherd_error{failure_kind::usage, fmt::format("{} is out of range, got '{}'", name, v)};
  return n;
}

namespace {

// The flag, else the environment variable, else the default.
std::chrono::milliseconds pick_ms(std::optional<long> flag, const char* env_name, std::chrono::milliseconds fallback,
                                  const char* option) {
  if (!flag) flag = env_long(env_name, "a number of milliseconds");
  if (!flag) return fallback;
  const long value = *flag;
  // The server takes an int of milliseconds; a day is more than any wait here should be.
  constexpr long k_max_ms = 86'400'000;
  if (value < 0 || value > k_max_ms)
    throw voucherd_error{failure_kind::usage,
                         fmt::format("--{} (or {}) must be 0..{} milliseconds, got {}", option, env_name, k_max_ms, value)};
  return std::chrono::milliseconds{value};
}

}  // namespace

namespace {

// The flag, else the environment variable, else "".
std::string pick_text(const std::string& flag, const char* env_name) {
  if (!flag.empty()) return flag;
  const char* env = std::getenv(env_name);
  return env ? env : "";
}

// The URL of a --database-url-file (it may hold a password).
std::string read_url_file(const std::string& path) { return read_secret_line(path, "database URL"); }

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return false;
  const std::string s = v;
  if (s == "1" || s == "true" || s == "yes" || s == "on") return true;
  if (s == "0" || s == "false" || s == "no" || s == "off") return false;
  throw voucherd_error{failure_kind::usage, fmt::format("{} must be 1 or 0, got '{}'", name, s)};
}

}  // namespace

std::string read_secret_line(const std::string& path, std::string_view what) {
  std::ifstream in{path};
  if (!in) throw voucherd_error{failure_kind::config, fmt::format("cannot read the {} file {}", what, path)};
  std::string line;
  std::getline(in, line);
  const auto first = line.find_first_not_of(" \t\r");
  const auto last = line.find_last_not_of(" \t\r");
  if (first == std::string::npos)
    throw voucherd_error{failure_kind::config, fmt::format("the {} file {} is empty", what, path)};
  return line.substr(first, last - first + 1);
}

common_options resolve_common(const common_flags& flags, std::string_view command, db_profile profile) {
  common_options o;
  auto& db = o.db;
  const std::string url_file = pick_text(flags.database_url_file, "VOUCHERD_DATABASE_URL_FILE");
  if (!flags.database_url.empty() && !flags.database_url_file.empty())
    throw voucherd_error{failure_kind::usage, "give --database-url or --database-url-file, not both"};
  if (!flags.database_url.empty()) db.url = flags.database_url;
  else if (!url_file.empty()) db.url = read_url_file(url_file);
  else if (const char* env = std::getenv("DATABASE_URL")) db.url = env;
  db.pooled = flags.transaction_pooler || env_flag("VOUCHERD_TRANSACTION_POOLER");
  db.listen_url = pick_text(flags.listen_url, "VOUCHERD_LISTEN_URL");
  db.application_name = fmt::format("voucherd-{}", command);
  const bool claim = profile == db_profile::claim;
  db.statement_timeout =
      pick_ms(flags.statement_timeout_ms, "VOUCHERD_STATEMENT_TIMEOUT_MS",
              claim ? connection_settings::k_claim_statement_timeout : connection_settings::k_maintenance_statement_timeout,
              "statement-timeout-ms");
  db.lock_timeout = pick_ms(flags.lock_timeout_ms, "VOUCHERD_LOCK_TIMEOUT_MS",
                            claim ? connection_settings::k_claim_lock_timeout : connection_settings::k_maintenance_lock_timeout,
                            "lock-timeout-ms");
  db.idle_in_transaction_timeout =
      pick_ms(flags.idle_in_transaction_timeout_ms, "VOUCHERD_IDLE_IN_TRANSACTION_TIMEOUT_MS",
              connection_settings::k_default_idle_in_transaction_timeout, "idle-in-transaction-timeout-ms");
  db.connect_timeout = pick_ms(flags.connect_timeout_ms, "VOUCHERD_CONNECT_TIMEOUT_MS",
                               connection_settings::k_default_connect_timeout, "connect-timeout-ms");
  o.database_url = db.conninfo();
  o.pooling = transaction_pooling::of(db);
  return o;
}

db_session open_session(const common_options& o) {
  db_session db{o.database_url, o.pooling};
  require_schema(db.conn());
  return db;
}

db_session open_migration_session(const common_options& o) {
  if (!o.pooling.enabled) return db_session{o.database_url};
  if (o.pooling.listen_conninfo.empty())
    throw voucherd_error{failure_kind::config,
                         "migrate holds a lock across transactions, which a transaction pooler does not keep: "
                         "give it a direct URL (--listen-url, or without --transaction-pooler)"};
  return db_session{o.pooling.listen_conninfo};
}

bool parse(const args& a, const std::string& usage, po::options_description& desc,
           const std::vector<std::string>& positional, po::variables_map& vm) {
  po::positional_options_description pos;
  for (const auto& name : positional) pos.add(name.c_str(), 1);
  try {
    po::store(po::command_line_parser(a).options(desc).positional(pos).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: " << usage << "\n\n" << desc << std::flush;
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw voucherd_error{failure_kind::usage, fmt::format("{}\nusage: {}", e.what(), usage)};
  }
  return true;
}

void print_line(const std::string& json_line) {
  std::fwrite(json_line.data(), 1, json_line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void print_json(const boost::json::object& line) { print_line(boost::json::serialize(line)); }

void say(const std::string& message) {
  std::fprintf(stderr, "voucherd: %s\n", message.c_str());
  std::fflush(stderr);
}

int answer_rejected(const std::string& campaign, const std::exception& refusal) {
  print_json({{"status", "rejected"}, {"campaign", printable_excerpt(campaign)}, {"reason", refusal.what()}});
  say(fmt::format("rejected: {}", refusal.what()));
  return k_exit_rejected;
}

std::string self_executable() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw voucherd_error{failure_kind::internal, "cannot find my own executable"};
  return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace voucherd::cli
