#include "notify/log_sink.hpp"

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/json_log.hpp"

namespace voucherd {

std::optional<std::string> log_sink::deliver(const notification& n) {
  if (!log_json(log_level::info, "notification", to_json(n)))
    return fmt::format("cannot write to stderr: {}", std::strerror(errno));
  return std::nullopt;
}

}  // namespace voucherd
