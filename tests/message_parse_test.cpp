// The one message parser every source hands its bytes to (source/message.hpp):
// what a claim request is made of, and the reason a message is rejected,
// before anything touches the database. No database needed.
#include <doctest/doctest.h>

#include <string>
#include <variant>

#include <fmt/format.h>

#include "source/message.hpp"

using namespace voucherd;

namespace {

constexpr const char* k_default = "signup";  // the worker's --campaign

struct parsed {
  std::optional<claim_request> request;
  std::optional<claim_outcome> rejected;
};

parsed parse(std::string_view body, bool oversized = false, const std::string& default_campaign = k_default) {
  auto result = parse_message(body, oversized, default_campaign, "stdin");
  if (auto* r = std::get_if<claim_request>(&result)) return {*r, std::nullopt};
  return {std::nullopt, std::get<claim_outcome>(result)};
}

// The user id of a message that parses, or "(rejected: reason)".
std::string user_of(std::string_view body) {
  const auto p = parse(body);
  return p.request ? p.request->user_id : "(rejected: " + p.rejected->reason + ")";
}

// The reason of a message that is rejected, or "(parsed)".
std::string reason_of(std::string_view body, bool oversized = false, const std::string& default_campaign = k_default) {
  const auto p = parse(body, oversized, default_campaign);
  return p.rejected ? p.rejected->reason : "(parsed)";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string with_user(const std::string& user_json) { return fmt::format(R"({{"user_id":{}}})", user_json); }

}  // namespace

TEST_CASE("a message is a JSON object with a user id; campaign and message id are optional") {
  const auto p = parse(R"({"user_id":"u-1","campaign":"spring","message_id":"m-1"})");
  REQUIRE_MESSAGE(p.request.has_value(), "a complete message parses: " << (p.rejected ? p.rejected->reason : ""));
  CHECK_MESSAGE(p.request->user_id == "u-1", "the user id as given: " << p.request->user_id);
  CHECK_MESSAGE(p.request->campaign == "spring", "the message's campaign: " << p.request->campaign);
  CHECK_MESSAGE(p.request->message_id == "m-1", "the message id as given: " << p.request->message_id);

  const auto bare = parse(R"({"user_id":"u-1"})");
  REQUIRE_MESSAGE(bare.request.has_value(), "a user id alone is a message");
  CHECK_MESSAGE(bare.request->message_id.empty(), "no message id: empty, got '" << bare.request->message_id << "'");
}

TEST_CASE("a message id lives in its transport's source, or in the namespace its message_source names") {
  const auto plain = parse(R"({"user_id":"u-1","message_id":"m-1"})");
  REQUIRE(plain.request.has_value());
  CHECK_MESSAGE(plain.request->source == "stdin", "the transport alone: " << plain.request->source);
  const auto named = parse(R"({"user_id":"u-1","message_id":"m-1","message_source":"shop-a.eu_1"})");
  REQUIRE_MESSAGE(named.request.has_value(), (named.rejected ? named.rejected->reason : ""));
  CHECK_MESSAGE(named.request->source == "stdin:shop-a.eu_1", "the client's namespace: " << named.request->source);
  for (const char* bad : {R"("a b")", R"("-a")", R"("a:b")", R"(7)"}) {
    const auto body = fmt::format(R"({{"user_id":"u","message_id":"m","message_source":{}}})", bad);
    const auto p = parse(body);
    REQUIRE_MESSAGE(p.rejected.has_value(), body << " is rejected");
    CHECK_MESSAGE(contains(p.rejected->reason, "message_source"), body << ": " << p.rejected->reason);
    CHECK_MESSAGE(!is_malformed(*p.rejected), "a message with a bad field, not malformed (HTTP 422): " << body);
  }
  CHECK_MESSAGE(contains(reason_of(fmt::format(R"({{"user_id":"u","message_source":"{}"}})", std::string(65, 'a'))),
                         "longer than 64"),
                "65 characters are too many");
}

TEST_CASE("a JSON integer user id is taken as its decimal text") {
  CHECK_MESSAGE(user_of(with_user("42")) == "42", "42 is the user \"42\"");
  CHECK_MESSAGE(user_of(with_user("0")) == "0", "0 is the user \"0\"");
  CHECK_MESSAGE(user_of(with_user("-7")) == "-7", "a negative integer keeps its sign");
  CHECK_MESSAGE(user_of(with_user("18446744073709551615")) == "18446744073709551615",
                "an integer beyond int64 (uint64 max) keeps every digit");
  CHECK_MESSAGE(user_of(with_user("42")) == user_of(with_user(R"("42")")), "42 and \"42\" are one user");
  CHECK_MESSAGE(contains(reason_of(with_user("4.2")), "user_id must be a string or an integer"),
                "a fraction is no user id: " << reason_of(with_user("4.2")));
  CHECK_MESSAGE(contains(reason_of(with_user("true")), "user_id must be a string or an integer"),
                "a boolean is no user id: " << reason_of(with_user("true")));
  CHECK_MESSAGE(contains(reason_of(with_user("[1]")), "user_id must be a string or an integer"),
                "an array is no user id: " << reason_of(with_user("[1]")));
  const auto numbered = parse(R"({"user_id":"u","message_id":17})");
  REQUIRE_MESSAGE(numbered.request.has_value(), "an integer message id parses");
  CHECK_MESSAGE(numbered.request->message_id == "17", "as its decimal text: " << numbered.request->message_id);
}

TEST_CASE("a missing, empty, oversized or non-printable user id is rejected with its reason") {
  CHECK_MESSAGE(reason_of(R"({"campaign":"signup"})") == "message has no user_id",
                "missing: " << reason_of(R"({"campaign":"signup"})"));
  CHECK_MESSAGE(reason_of(with_user("null")) == "message has no user_id", "null is missing: " << reason_of(with_user("null")));
  CHECK_MESSAGE(contains(reason_of(with_user(R"("")")), "user id is empty"), "empty: " << reason_of(with_user(R"("")")));

  const std::string longest(k_max_user_id_chars, 'x');
  CHECK_MESSAGE(user_of(with_user('"' + longest + '"')) == longest, "128 characters are allowed");
  CHECK_MESSAGE(contains(reason_of(with_user('"' + longest + "x\"")), "user id is longer than 128 characters"),
                "129 characters: " << reason_of(with_user('"' + longest + "x\"")));
  std::string accents;
  for (std::size_t i = 0; i < k_max_user_id_chars; ++i) accents += "\xc3\xa9";  // é, two bytes each
  CHECK_MESSAGE(user_of(with_user('"' + accents + '"')) == accents, "the limit counts characters, not bytes");
  CHECK_MESSAGE(contains(reason_of(with_user('"' + std::string(100 * 1024, 'x') + '"')), "longer than 128"),
                "a 100 kB user id is refused as too long");

  for (const char* control : {R"("a\u0001b")", R"("tab\there")", R"("nl\n")", R"("del\u007f")", R"("c1\u0085")"}) {
    CAPTURE(control);
    CHECK_MESSAGE(contains(reason_of(with_user(control)), "user id contains control characters"),
                  "non-printable: " << reason_of(with_user(control)));
  }
  const auto rejected = parse(R"({"user_id":"","campaign":"spring","message_id":"m-9"})");
  REQUIRE_MESSAGE(rejected.rejected.has_value(), "an empty user id is rejected");
  CHECK_MESSAGE(rejected.rejected->status == claim_status::rejected, "as the outcome rejected");
  CHECK_MESSAGE(rejected.rejected->campaign == "spring", "the rejection names the campaign it was for");
  CHECK_MESSAGE(rejected.rejected->message_id == "m-9", "and echoes the message id");
  CHECK_MESSAGE(!is_malformed(*rejected.rejected), "a message with a bad field is no malformed body (HTTP 422, not 400)");
}

TEST_CASE("bytes that are not UTF-8, not JSON, not an object or too long are malformed") {
  struct bad {
    std::string body;
    bool oversized;
    std::string reason_has;
  };
  for (const auto& b : std::vector<bad>{
           {"{\"user_id\":\"\xff\xfe\"}", false, "message is not valid UTF-8"},
           {"{\"user_id\":\"\xc0\xaf\"}", false, "message is not valid UTF-8"},   // overlong '/'
           {"{\"user_id\":\"\xed\xa0\x80\"}", false, "message is not valid UTF-8"},  // a surrogate
           {"{\"user_id\":\"\xe2\x82\"}", false, "message is not valid UTF-8"},   // cut short
           {R"({"user_id": 12, oops)", false, "malformed JSON"},
           {"", false, "malformed JSON"},
           {R"([{"user_id":"u"}])", false, "message is not a JSON object"},
           {R"("u-1")", false, "message is not a JSON object"},
           {"42", false, "message is not a JSON object"},
           {R"({"user_id":"u"})", true, fmt::format("message is longer than {} bytes", k_max_message_bytes)},
       }) {
    CAPTURE(b.body);
    const auto p = parse(b.body, b.oversized);
    REQUIRE_MESSAGE(p.rejected.has_value(), "rejected: " << b.body);
    CHECK_MESSAGE(contains(p.rejected->reason, b.reason_has), "the reason says '" << b.reason_has << "', got '"
                                                                                  << p.rejected->reason << "'");
    CHECK_MESSAGE(is_malformed(*p.rejected), "counted as malformed (HTTP 400): " << p.rejected->reason);
  }
}

TEST_CASE("a message that names a field twice is rejected, however the second is spelled") {
  // Boost.JSON keeps the last of two equal keys; a reader that keeps the
  // first would see another user (found by a helper over HTTP, 2026-11-28).
  CHECK_MESSAGE(contains(reason_of(R"({"user_id":"a","user_id":"b"})"), R"(names "user_id" twice)"),
                reason_of(R"({"user_id":"a","user_id":"b"})"));
  CHECK_MESSAGE(contains(reason_of(R"({"user_id":"a","user\u005fid":"b"})"), R"(names "user_id" twice)"),
                "an escaped spelling is the same key");
  CHECK_MESSAGE(contains(reason_of(R"({"campaign":"x","user_id":"a","campaign":"y"})"), R"(names "campaign" twice)"),
                "any field");
  CHECK_MESSAGE(parse(R"({"user_id":"a","extra":{"k":1,"k":2},"list":[{"k":1},{"k":2}]})").request.has_value(),
                "keys repeated inside a field the claim does not read are its sender's business");
}

TEST_CASE("the campaign defaults to the worker's; a message may name another") {
  CHECK_MESSAGE(parse(R"({"user_id":"u"})").request->campaign == k_default, "no campaign: the worker's");
  CHECK_MESSAGE(parse(R"({"user_id":"u","campaign":null})").request->campaign == k_default, "null: the worker's");
  CHECK_MESSAGE(parse(R"({"user_id":"u","campaign":"autumn"})").request->campaign == "autumn", "named: that one");
  CHECK_MESSAGE(parse(R"({"user_id":"u","campaign":"autumn"})", false, "").request->campaign == "autumn",
                "named, with no worker default: that one");
  CHECK_MESSAGE(contains(reason_of(R"({"user_id":"u"})", false, ""), "names no campaign and the worker has no --campaign"),
                "neither: rejected, " << reason_of(R"({"user_id":"u"})", false, ""));
  // An empty name is not the worker's, and the worker may well have one.
  CHECK_MESSAGE(reason_of(R"({"user_id":"u","campaign":""})") == "campaign is empty",
                reason_of(R"({"user_id":"u","campaign":""})"));
  CHECK_MESSAGE(contains(reason_of(R"({"user_id":"u","campaign":7})"), "campaign must be a string"),
                "a campaign that is no string: " << reason_of(R"({"user_id":"u","campaign":7})"));
  CHECK_MESSAGE(contains(reason_of(R"({"user_id":"u","campaign":"Not A Slug"})"), "campaign name"),
                "a campaign that is no slug: " << reason_of(R"({"user_id":"u","campaign":"Not A Slug"})"));
  CHECK_MESSAGE(contains(reason_of(R"({"user_id":"u","message_id":["m"]})"), "message_id must be a string or an integer"),
                "a message id that is neither: " << reason_of(R"({"user_id":"u","message_id":["m"]})"));
}
