#pragma once
// The result of a claim is a value, not an exception: "no free voucher" is the
// outcome sold_out. Only infrastructure failures throw (see common/failure.hpp).
#include <cstdint>
#include <optional>
#include <string>

#include <boost/json/object.hpp>

#include "common/failure.hpp"

namespace voucherd {

enum class claim_status { claimed, already_claimed, sold_out, rejected };

const char* to_string(claim_status status);
std::optional<claim_status> claim_status_from(std::string_view text);

struct claim_outcome {
  claim_status status = claim_status::rejected;
  std::string campaign;
  std::string user_id;
  std::optional<std::int64_t> voucher_id;
  std::string code;
  std::string reason;      // sold_out and rejected only
  std::string message_id;  // echoed when the message carried one
  // The claim statement wrote the dead letter itself (a message id reused
  // for another user or campaign): the source must not write another.
  bool dead_lettered = false;

  bool owns_voucher() const {
    return status == claim_status::claimed || status == claim_status::already_claimed;
  }
};

claim_outcome rejected_outcome(std::string campaign, std::string user_id, std::string reason,
                               std::string message_id = {});

// {"status":"claimed","campaign":"signup","user_id":"1","voucher_id":1,"code":"BV1LN2KJ"}
boost::json::object to_json(const claim_outcome& outcome);
std::string to_json_line(const claim_outcome& outcome);

// What the claim path answered for one pushed message (POST /v1/claims):
//  - outcome set: the claim's outcome (claimed, already_claimed, sold_out, rejected);
//  - malformed: the body is not a usable message (bad JSON, not an object); error says why;
//  - failure set: the claim could not run (transient: retry later; internal: a bug); error says why.
struct claim_reply {
  std::optional<claim_outcome> outcome;
  bool malformed = false;
  std::optional<failure_kind> failure;
  std::string error;
  // Set with failure = transient when an HTTP claim was turned away unclaimed
  // by back-pressure: "queue_full" or "deadline" (http_source).
  std::string overload;
};

// The sysexits status of SPEC section 4: 0 claimed/already_claimed, 3 sold_out,
// 65 rejected.
int exit_code_for(const claim_outcome& outcome);

}  // namespace voucherd
