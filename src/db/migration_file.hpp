#pragma once
// A numbered migration: "0001_core.sql" and its SQL text.
#include <string>
#include <vector>

namespace voucherd {

struct migration_file {
  std::string name;  // file name; the leading number orders the files
  std::string text;
};

// The files of migrations/ as they were when this binary was built, in order.
const std::vector<migration_file>& embedded_migrations();

}  // namespace voucherd
