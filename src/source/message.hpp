#pragma once
// A queue message as every source hands it to the worker, and the one parser
// that turns its bytes into a claim request (or the reason it is rejected).
//
// Wire format (one JSON object; only user_id is required):
//   {"user_id": "42" | 42, "campaign": "signup", "message_id": "m-1",
//    "message_source": "shop-a"}
// A JSON integer user_id (or message_id) is taken as its decimal text.
// message_source is a namespace the client picks for its message ids: the
// outcome is recorded under the source "<transport>:<message_source>"
// (claim_request::source; a queue keys by its own ids instead, see
// message_source::key_outcome). The checks of claim_request.hpp apply;
// nothing here touches the database (I5).
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "claim/claim_outcome.hpp"
#include "claim/claim_request.hpp"

namespace voucherd {

// Longer messages are rejected unread; a source keeps at most this many
// bytes of one (a 10 MB line costs 1 MiB of memory, not 10).
inline constexpr std::size_t k_max_message_bytes = 1 << 20;
// How much of a rejected message the dead_letter table keeps.
inline constexpr std::size_t k_dead_letter_body_bytes = 64 * 1024;

struct delivery {
  std::string id;                  // source-specific: queue row id, stream entry id, line number
  std::string body;                // the message bytes, at most k_max_message_bytes
  bool oversized = false;          // the message was longer than k_max_message_bytes
  std::uint64_t seq = 0;           // arrival order (stdin prints outcomes in this order)
  int deliveries = 1;              // how often the queue handed it out (redis)
  int attempts = 0;                // tries alone since its claim failed (message_source::note_attempt)
  std::string last_error;          // why its last try failed, when it did
  std::optional<std::string> poison;  // set by a source to reject without parsing (too many deliveries)
  double lag_seconds = 0;          // time spent on the queue, when the source knows it
  bool dead_lettered = false;      // set while recording: this delivery was dead-lettered now
};

// Whether a rejection from parse_message means the bytes are not a message at
// all (bad UTF-8, bad JSON, not an object), as opposed to a message with bad
// fields. HTTP answers the first 400 and the second 422.
bool is_malformed(const claim_outcome& rejected);

// Parses a message that arrived through `transport` ("stdin", "http", ...:
// the first part of its source). Returns the request, or the rejected
// outcome saying why.
std::variant<claim_request, claim_outcome> parse_message(std::string_view body, bool oversized,
                                                         const std::string& default_campaign,
                                                         std::string_view transport);

// What a queue row holds of its message besides the bytes (migration 0009):
// the user id and the campaign the message names (nullopt: none, the
// worker's --campaign applies), when parse_message accepts it whatever the
// default campaign; nullopt when it rejects it.
struct queued_request {
  std::string user_id;
  std::optional<std::string> campaign;
};
std::optional<queued_request> queued_request_of(std::string_view body);

// The body as a bytea hex literal ("\x..."), cut to k_dead_letter_body_bytes.
std::string bytea_hex(std::string_view body);

}  // namespace voucherd
