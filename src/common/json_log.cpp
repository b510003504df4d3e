#include "common/json_log.hpp"

#include <unistd.h>

#include <chrono>
#include <ctime>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

namespace voucherd {

namespace {

const char* to_string(log_level level) {
  switch (level) {
    case log_level::debug: return "debug";
    case log_level::info: return "info";
    case log_level::warn: return "warn";
    case log_level::error: return "error";
  }
  return "info";
}

std::string utc_now() {
  const auto now = std::chrono::system_clock::now();
  const auto t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

}  // namespace

bool log_json(log_level level, std::string_view msg, boost::json::object fields) {
  boost::json::object line;
  line["level"] = to_string(level);
  line["time"] = utc_now();
  line["message"] = msg;
  for (auto& kv : fields) line[kv.key()] = std::move(kv.value());
  auto text = boost::json::serialize(line);
  text += '\n';
  // One write(2) per line keeps lines whole when threads log at once.
  return ::write(2, text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

}  // namespace voucherd
