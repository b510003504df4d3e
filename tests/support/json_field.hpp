#pragma once
// Reading the JSON lines voucherd prints (outcome lines, log lines, HTTP
// answers) in checks.
#include <string>

#include <boost/json.hpp>

namespace voucherd::test {

// A field of a JSON object line as text: strings as they are, numbers as
// their decimal text; "" when absent or when the line is no JSON object.
inline std::string json_field(const std::string& line, const char* key) {
  boost::system::error_code ec;
  const auto v = boost::json::parse(line, ec);
  if (ec || !v.is_object() || !v.as_object().contains(key)) return "";
  const auto& f = v.as_object().at(key);
  return f.is_string() ? std::string{f.get_string()} : boost::json::serialize(f);
}

}  // namespace voucherd::test
