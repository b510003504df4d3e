#include "notify/log_sink.hpp"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

namespace voucherd {

std::string log_time_now() {
  using namespace std::chrono;
  const auto now = system_clock::now();
  const std::time_t seconds = system_clock::to_time_t(now);
  const auto millis = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  return fmt::format("{}.{:03}Z", text, millis);
}

std::optional<std::string> log_sink::deliver(const notification& n) {
  boost::json::object line;
  line["level"] = "info";
  line["time"] = log_time_now();
  line["message"] = "notification";
  for (const auto& field : to_json(n)) line[field.key()] = field.value();
  const std::string text = boost::json::serialize(line) + "\n";
  if (std::fwrite(text.data(), 1, text.size(), stderr) != text.size() || std::fflush(stderr) != 0)
    return fmt::format("cannot write to stderr: {}", std::strerror(errno));
  return std::nullopt;
}

}  // namespace voucherd
