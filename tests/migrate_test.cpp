// Migrations: ordered, recorded with checksums, idempotent, refuse changed
// files, safe to run twice at once.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/failure.hpp"
#include "db/migrator.hpp"
#include "support/test_db.hpp"

using namespace voucherd;
using namespace voucherd::test;

namespace {

std::string copy_migrations_to_temp() {
  namespace fs = std::filesystem;
  auto dir = fs::temp_directory_path() / ("vd-migrations-" + std::to_string(::getpid()) + "-" +
                                          std::to_string(std::rand()));
  fs::create_directories(dir);
  for (const auto& f : embedded_migrations()) std::ofstream{dir / f.name} << f.text;
  return dir.string();
}

}  // namespace

TEST_CASE("migrate applies every file once and is a no-op when up to date") {
  test_database db{/*migrate=*/false};
  auto first = run_voucherd({"migrate", "--database-url", db.url()});
  CHECK_MESSAGE(first.exit_code == 0, first.err);
  CHECK_MESSAGE(first.out.find("0001_campaign_and_pool.sql") != std::string::npos, first.out);
  CHECK(db.count("SELECT count(*) FROM voucherd_migration") == static_cast<long>(embedded_migrations().size()));

  auto second = run_voucherd({"migrate", "--database-url", db.url()});
  CHECK_MESSAGE(second.exit_code == 0, second.err);
  CHECK_MESSAGE(second.out.find("\"applied\":[]") != std::string::npos, second.out);
  CHECK(db.count("SELECT count(*) FROM voucherd_migration") == static_cast<long>(embedded_migrations().size()));
}

TEST_CASE("an applied migration whose file changed is refused and nothing is applied") {
  test_database db{/*migrate=*/false};
  const auto dir = copy_migrations_to_temp();
  auto r = run_voucherd({"migrate", "--dir", dir, "--database-url", db.url()});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const auto applied_before = db.count("SELECT count(*) FROM voucherd_migration");

  std::ofstream{dir + "/0001_campaign_and_pool.sql", std::ios::app} << "\n-- edited after it was applied\n";
  std::ofstream{dir + "/9999_new.sql"} << "CREATE TABLE should_not_exist (x int);\n";
  r = run_voucherd({"migrate", "--dir", dir, "--database-url", db.url()});
  CHECK_MESSAGE(r.exit_code == k_exit_rejected, r.err);
  CHECK_MESSAGE(r.err.find("0001_campaign_and_pool.sql") != std::string::npos, r.err);
  CHECK_MESSAGE(r.err.find("must not change") != std::string::npos, r.err);
  CHECK(db.count("SELECT count(*) FROM voucherd_migration") == applied_before);
  CHECK(db.scalar("SELECT to_regclass('should_not_exist')::text") == "");
  std::filesystem::remove_all(dir);
}

TEST_CASE("a migration the database refuses is rejected (65), not an internal error, and is not recorded") {
  test_database db{/*migrate=*/false};
  const auto dir = copy_migrations_to_temp();
  std::ofstream{dir + "/9999_broken.sql"} << "CREATE TABLE half_done (x int);\nSELECT 1/0;\n";
  const auto r = run_voucherd({"migrate", "--dir", dir, "--database-url", db.url()});
  CHECK_MESSAGE(r.exit_code == k_exit_rejected, "was 70 until 2026-11-28: ", r.err);
  CHECK_MESSAGE(r.err.find("migration 9999_broken.sql failed") != std::string::npos, r.err);
  CHECK(db.count("SELECT count(*) FROM voucherd_migration") == static_cast<long>(embedded_migrations().size()));
  CHECK_MESSAGE(db.scalar("SELECT to_regclass('half_done')::text") == "", "the failed file left nothing behind");
  std::filesystem::remove_all(dir);
}

TEST_CASE("two migrators at once apply each file exactly once") {
  for (int round = 0; round < 3; ++round) {
    test_database db{/*migrate=*/false};
    std::vector<int> pids;
    for (int i = 0; i < 4; ++i) pids.push_back(spawn_voucherd({"migrate", "--database-url", db.url()}));
    for (int pid : pids) CHECK_MESSAGE(wait_exit(pid) == 0, "a concurrent migrate failed");
    CHECK(db.count("SELECT count(*) FROM voucherd_migration") ==
          static_cast<long>(embedded_migrations().size()));
    CHECK(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'voucher_item'") == 1);
  }
}
