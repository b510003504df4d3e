#pragma once
// A SQL statement compiled in from sql/<name>.sql. The name is stable: it is
// the prepared-statement name and the label used in logs and metrics.
#include <string>
#include <string_view>

namespace voucherd {

struct sql_statement {
  std::string_view name;
  std::string_view text;

  std::string name_str() const { return std::string{name}; }
  std::string text_str() const { return std::string{text}; }
};

}  // namespace voucherd
