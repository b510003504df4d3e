#pragma once
// The one log: one JSON object per line on stderr with level, time (UTC,
// ISO 8601 with milliseconds) and message (SPEC section 5), plus any extra
// fields. The worker, the outbox dispatcher and the log sink's notifications
// all write through it. Thread-safe (one write per line). Never log a
// database URL unredacted.
#include <string>
#include <string_view>

#include <boost/json/object.hpp>

namespace voucherd {

enum class log_level { debug, info, warn, error };

// Returns whether the whole line was written.
bool log_json(log_level level, std::string_view msg, boost::json::object fields = {});

}  // namespace voucherd
