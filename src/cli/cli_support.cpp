#include "cli/cli_support.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/failure.hpp"

namespace voucherd::cli {

void add_common(po::options_description& desc, common_flags& flags) {
  desc.add_options()
      ("database-url", po::value(&flags.database_url),
       "Postgres URL; default: $DATABASE_URL, then libpq's PG* variables. "
       "Prefer PGPASSWORD or PGPASSFILE for the password.")
      ("statement-timeout-ms", po::value(&flags.statement_timeout_ms),
       "server-side bound on each statement, 0 = none (env VOUCHERD_STATEMENT_TIMEOUT_MS; "
       "default 5000, 0 for migrate/import/generate)")
      ("lock-timeout-ms", po::value(&flags.lock_timeout_ms),
       "bound on each lock wait, 0 = none; a claim that runs out is transient "
       "(env VOUCHERD_LOCK_TIMEOUT_MS; default 2000, 30000 for migrate/import/generate)")
      ("idle-in-transaction-timeout-ms", po::value(&flags.idle_in_transaction_timeout_ms),
       "the server ends a session idle inside a transaction this long, 0 = never "
       "(env VOUCHERD_IDLE_IN_TRANSACTION_TIMEOUT_MS; default 10000)")
      ("connect-timeout-ms", po::value(&flags.connect_timeout_ms),
       "bound on opening a connection (env VOUCHERD_CONNECT_TIMEOUT_MS; default 5000)")
      ("help,h", "show this help");
}

namespace {

// The flag, else the environment variable, else the default.
std::chrono::milliseconds pick_ms(long flag, const char* env_name, std::chrono::milliseconds fallback,
                                  const char* option) {
  long value = flag;
  if (value < 0) {
    const char* env = std::getenv(env_name);
    if (!env || !*env) return fallback;
    char* end = nullptr;
    value = std::strtol(env, &end, 10);
    if (*end != '\0')
      throw voucherd_error{failure_kind::usage, fmt::format("{} must be a number of milliseconds, got '{}'",
                                                            env_name, env)};
  }
  // The server takes an int of milliseconds; a day is more than any wait here should be.
  constexpr long k_max_ms = 86'400'000;
  if (value < 0 || value > k_max_ms)
    throw voucherd_error{failure_kind::usage,
                         fmt::format("--{} (or {}) must be 0..{} milliseconds, got {}", option, env_name, k_max_ms, value)};
  return std::chrono::milliseconds{value};
}

}  // namespace

common_options resolve_common(const common_flags& flags, std::string_view command, db_profile profile) {
  common_options o;
  auto& db = o.db;
  if (!flags.database_url.empty()) db.url = flags.database_url;
  else if (const char* env = std::getenv("DATABASE_URL")) db.url = env;
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
  return o;
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

std::string self_executable() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw voucherd_error{failure_kind::internal, "cannot find my own executable"};
  return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace voucherd::cli
