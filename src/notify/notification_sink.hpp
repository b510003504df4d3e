#pragma once
// A notification as the outbox holds it, and the interface every sink
// implements. A sink delivers one notification at a time, on the dispatcher's
// thread, and says whether the receiver accepted it; it never throws for a
// receiver's failure (that is a refused delivery, retried by the dispatcher).
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <boost/json/object.hpp>

namespace voucherd {

struct notify_config;

struct notification {
  std::int64_t id = 0;          // notification_outbox.id
  std::string idempotency_key;  // stable per (voucher, user): receivers drop repeats
  std::string campaign;
  std::int64_t voucher_id = 0;
  std::string user_id;
  std::string code;
  int attempts = 0;  // attempts made before this one
};

// {"idempotency_key":...,"campaign":...,"user_id":...,"voucher_id":...,"code":...}
boost::json::object to_json(const notification& n);

class notification_sink {
 public:
  virtual ~notification_sink() = default;
  // nullopt = accepted; otherwise why the delivery failed (stored as last_error).
  virtual std::optional<std::string> deliver(const notification& n) = 0;
  // The longest one deliver() can take (its timeouts), for sizing the lease.
  virtual std::chrono::milliseconds worst_case() const = 0;
};

// The sink a (validated) config names.
std::unique_ptr<notification_sink> make_sink(const notify_config& config);

}  // namespace voucherd
