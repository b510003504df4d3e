#pragma once
// The log sink: one JSON object per notification on stderr, a line of the
// one log (common/json_log.hpp: level, time, message) with the
// notification's fields:
//   {"level":"info","time":"2026-11-26T16:30:00.123Z","message":"notification",
//    "idempotency_key":"1-...","campaign":"signup","user_id":"1","voucher_id":1,"code":"BV1LN2KJ"}
// stderr, not stdout: stdout carries the outcome lines of `worker --source stdin`.
// Accepted once the line is written and flushed.
#include "notify/notification_sink.hpp"

namespace voucherd {

class log_sink final : public notification_sink {
 public:
  std::optional<std::string> deliver(const notification& n) override;
  std::chrono::milliseconds worst_case() const override { return std::chrono::milliseconds{100}; }
};

}  // namespace voucherd
