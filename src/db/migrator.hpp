#pragma once
// Applies numbered migrations in order, each in its own transaction together
// with its record in voucherd_migration (name + sha256 of the text).
//
// - Already applied files are skipped; running twice is a no-op.
// - An applied file whose text changed is refused (failure_kind::rejected),
//   before anything is applied: a deployed schema must not silently drift.
// - An applied migration that the binary does not know (a newer binary ran
//   here) is refused too.
// - Two migrators at once are serialised by a session advisory lock.
// - A role that is not the schema owner (cannot create in the schema, or
//   lacks the privileges of voucherd_migration's owner) is refused first,
//   with failure_kind::config: a worker's role never migrates.
#include <string>
#include <vector>

#include <pqxx/connection>

#include "db/migration_file.hpp"

namespace voucherd {

// Arbitrary, fixed: "voucherd" in ASCII, as a 64-bit advisory lock key.
inline constexpr long long k_migration_lock_key = 0x766f756368657264LL;

struct migration_report {
  std::vector<std::string> applied;  // names applied by this run, in order
  std::size_t already_applied = 0;
};

migration_report apply_migrations(pqxx::connection& conn, const std::vector<migration_file>& files);

// Reads DIR/*.sql, sorted by name. Throws voucherd_error(usage) on an
// unreadable directory or a file whose name does not start with a number.
std::vector<migration_file> read_migration_dir(const std::string& dir);

}  // namespace voucherd
