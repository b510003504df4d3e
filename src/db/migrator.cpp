#include "db/migrator.hpp"
#include "db/classify.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>
#include <pqxx/nontransaction>
#include <pqxx/pqxx>

#include "common/failure.hpp"
#include "db/session.hpp"
#include "sql_catalog.hpp"

namespace voucherd {

namespace {

void check_names(const std::vector<migration_file>& files) {
  for (std::size_t i = 0; i < files.size(); ++i) {
    const auto& name = files[i].name;
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0])))
      throw voucherd_error{failure_kind::usage,
                           fmt::format("migration '{}' must start with its number, like 0001_name.sql", name)};
    if (i > 0 && files[i - 1].name >= name)
      throw voucherd_error{failure_kind::usage, "migrations must be given in name order"};
  }
}

// Releases the advisory lock however apply_migrations ends.
class migration_lock {
 public:
  explicit migration_lock(pqxx::connection& conn) : conn_{conn} {
    pqxx::nontransaction tx{conn_};
    exec(tx, sql::migration_lock, k_migration_lock_key);
  }
  ~migration_lock() {
    try {
      pqxx::nontransaction tx{conn_};
      exec(tx, sql::migration_unlock, k_migration_lock_key);
    } catch (...) {
      // The lock dies with the session anyway.
    }
  }
  migration_lock(const migration_lock&) = delete;
  migration_lock& operator=(const migration_lock&) = delete;

 private:
  pqxx::connection& conn_;
};

// Refuses, before anything is locked or created, a role that is not the
// schema owner (a voucherd_worker login, say): it could not apply a
// migration, and should be told so rather than "permission denied for
// schema public".
void check_may_apply(pqxx::connection& conn) {
  pqxx::nontransaction tx{conn};
  const auto row = exec(tx, sql::migration_may_apply)[0];
  if (row["may_apply"].as<bool>()) return;
  const auto role = row["role"].as<std::string>();
  const auto owner = row["owner"].as<std::string>();
  // Worded without "role": the config hint for a failed login keys on it.
  throw voucherd_error{
      failure_kind::config,
      owner.empty()
          ? fmt::format("{} may not create tables in schema {}: run `voucherd migrate` as the user that is to "
                        "own voucherd's schema",
                        role, row["schema"].as<std::string>())
          : fmt::format("{} is not the schema owner and may not migrate this database: run `voucherd migrate` "
                        "as {}; a voucherd_worker login only claims",
                        role, owner)};
}

}  // namespace

migration_report apply_migrations(pqxx::connection& conn, const std::vector<migration_file>& files) {
  check_names(files);
  check_may_apply(conn);
  migration_lock lock{conn};
  {
    pqxx::nontransaction tx{conn};
    exec(tx, sql::migration_table);
  }

  std::map<std::string, std::string> applied;  // name -> recorded checksum
  std::vector<std::string> checksums;
  {
    pqxx::nontransaction tx{conn};
    for (const auto& row : exec(tx, sql::migration_applied))
      applied.emplace(row[0].as<std::string>(), row[1].as<std::string>());
    for (const auto& f : files)
      checksums.push_back(exec(tx, sql::migration_checksum, f.text)[0][0].as<std::string>());
  }

  migration_report report;
  for (std::size_t i = 0; i < files.size(); ++i) {
    auto it = applied.find(files[i].name);
    if (it == applied.end()) continue;
    if (it->second != checksums[i])
      throw voucherd_error{failure_kind::rejected,
                           fmt::format("migration {} was applied with checksum {} but the file now has {}; "
                                       "applied migrations must not change: add a new migration instead",
                                       files[i].name, it->second, checksums[i])};
    ++report.already_applied;
  }
  for (const auto& [name, sum] : applied) {
    bool known = std::any_of(files.begin(), files.end(), [&](const auto& f) { return f.name == name; });
    if (!known)
      throw voucherd_error{failure_kind::rejected,
                           fmt::format("the database has migration {} applied, which this voucherd does not "
                                       "know; is it older than the one that migrated?", name)};
  }

  for (std::size_t i = 0; i < files.size(); ++i) {
    if (applied.count(files[i].name)) continue;
    pqxx::work txn{conn};
    try {
      txn.exec(files[i].text);
    } catch (const pqxx::sql_error& e) {
      // A server that went away is worth a retry; a role without the
      // privilege is the set-up's; any other refusal is the file's (as a
      // changed file is): never an internal error of voucherd's.
      const auto kind = classify(e);
      throw voucherd_error{kind == failure_kind::transient || kind == failure_kind::config ? kind
                                                                                            : failure_kind::rejected,
                           fmt::format("migration {} failed: {}", files[i].name, e.what())};
    }
    exec(txn, sql::migration_record, files[i].name, checksums[i]);
    txn.commit();
    report.applied.push_back(files[i].name);
  }
  return report;
}

std::vector<migration_file> read_migration_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<migration_file> files;
  std::error_code ec;
  fs::directory_iterator it{dir, ec};
  if (ec) throw voucherd_error{failure_kind::usage, fmt::format("cannot read {}: {}", dir, ec.message())};
  for (const auto& entry : it) {
    if (entry.path().extension() != ".sql") continue;
    std::ifstream in{entry.path(), std::ios::binary};
    std::ostringstream text;
    text << in.rdbuf();
    files.push_back({entry.path().filename().string(), text.str()});
  }
  std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  check_names(files);
  return files;
}

}  // namespace voucherd
