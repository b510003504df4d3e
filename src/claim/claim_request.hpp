#pragma once
// What a claim asks for, and the checks every entry point (CLI, queue, HTTP)
// runs on it before the database is touched (I5: bad input changes nothing).
#include <optional>
#include <string>
#include <string_view>

namespace voucherd {

inline constexpr std::size_t k_max_user_id_chars = 128;
inline constexpr std::size_t k_max_message_id_chars = 200;
inline constexpr std::size_t k_max_campaign_name_chars = 63;
inline constexpr std::size_t k_max_source_chars = 200;
inline constexpr std::size_t k_max_message_source_chars = 64;

struct claim_request {
  std::string campaign;
  std::string user_id;
  std::string message_id;  // empty when the message carried none
  // Where message_id lives (migration 0006): the claim records its outcome
  // under (source, message_id), so ids of different sources never collide,
  // and a repeat of one with another user or campaign is rejected. Set by
  // the entry point: "redis:<stream>", "http[:<name>]", "stdin[:<name>]",
  // "cli[:<name>]" (see outcome_source). Unused without a message id. (An
  // initializer, so that {campaign, user, message id} aggregates need not name it.)
  std::string source{};
};

// The source of a message id that an entry point (transport: "http",
// "stdin", "cli") takes from its client, within the namespace the client
// chose (the message's message_source field, `claim --message-source`):
// "<transport>" without one, "<transport>:<message_source>" with one.
std::string outcome_source(std::string_view transport, std::string_view message_source);

// Why a user id is unacceptable, or nullopt when it is fine: 1..128 characters
// of valid UTF-8 with no control characters.
std::optional<std::string> user_id_problem(std::string_view user_id);

// Same rules for message ids (1..200 characters); an empty id means "none".
std::optional<std::string> message_id_problem(std::string_view message_id);

// A client's namespace for its message ids: empty (none), or 1..64 of
// A-Z a-z 0-9 . _ - starting with a letter or digit.
std::optional<std::string> message_source_problem(std::string_view message_source);

// Campaign names are slugs: [a-z0-9][a-z0-9_-]{0,62}.
std::optional<std::string> campaign_name_problem(std::string_view name);

// The first problem of a request, checked in the order campaign, user,
// message id, source (a message id needs one: 1..200 characters, no control
// characters).
std::optional<std::string> request_problem(const claim_request& request);

// A form of untrusted text that is safe to echo in JSON and logs: unchanged
// when it is a valid id, else invalid bytes become U+FFFD, control characters
// '?', and it is cut to 64 characters followed by "...".
std::string printable_excerpt(std::string_view text);

// Number of UTF-8 code points, or nullopt if the bytes are not valid UTF-8.
std::optional<std::size_t> utf8_length(std::string_view bytes);

}  // namespace voucherd
