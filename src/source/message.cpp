#include "source/message.hpp"

#include <set>

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <fmt/format.h>

namespace voucherd {

namespace {

// A key of the message (the top-level object) that appears twice, if any,
// as Boost.JSON's parse keeps only the last one silently. A body naming
// user_id twice would be read as one user here and as another by any reader
// that takes the first (the queue's adapter, a log): refused instead.
class top_level_keys {
 public:
  static constexpr std::size_t max_array_size = -1;
  static constexpr std::size_t max_object_size = -1;
  static constexpr std::size_t max_string_size = -1;
  static constexpr std::size_t max_key_size = -1;

  std::optional<std::string> repeated;

  bool on_document_begin(boost::json::error_code&) { return true; }
  bool on_document_end(boost::json::error_code&) { return true; }
  bool on_array_begin(boost::json::error_code&) { return ++depth_, true; }
  bool on_array_end(std::size_t, boost::json::error_code&) { return --depth_, true; }
  bool on_object_begin(boost::json::error_code&) { return ++depth_, true; }
  bool on_object_end(std::size_t, boost::json::error_code&) { return --depth_, true; }
  bool on_string_part(boost::json::string_view, std::size_t, boost::json::error_code&) { return true; }
  bool on_string(boost::json::string_view, std::size_t, boost::json::error_code&) { return true; }
  bool on_key_part(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    if (depth_ == 1) key_.append(s.data(), s.size());
    return true;
  }
  bool on_key(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    if (depth_ != 1) return true;
    key_.append(s.data(), s.size());
    if (!seen_.insert(key_).second && !repeated) repeated = key_;
    key_.clear();
    return true;
  }
  bool on_number_part(boost::json::string_view, boost::json::error_code&) { return true; }
  bool on_int64(std::int64_t, boost::json::string_view, boost::json::error_code&) { return true; }
  bool on_uint64(std::uint64_t, boost::json::string_view, boost::json::error_code&) { return true; }
  bool on_double(double, boost::json::string_view, boost::json::error_code&) { return true; }
  bool on_bool(bool, boost::json::error_code&) { return true; }
  bool on_null(boost::json::error_code&) { return true; }
  bool on_comment_part(boost::json::string_view, boost::json::error_code&) { return true; }
  bool on_comment(boost::json::string_view, boost::json::error_code&) { return true; }

 private:
  int depth_ = 0;
  std::string key_;
  std::set<std::string> seen_;
};

std::optional<std::string> repeated_key(std::string_view body) {
  boost::json::basic_parser<top_level_keys> parser{boost::json::parse_options{}};
  boost::json::error_code ec;
  parser.write_some(false, body.data(), body.size(), ec);
  return ec ? std::nullopt : parser.handler().repeated;
}

// A string field, or an integer taken as its decimal text.
std::optional<std::string> text_or_integer(const boost::json::value& v) {
  if (v.is_string()) return std::string{v.get_string()};
  if (v.is_int64()) return std::to_string(v.get_int64());
  if (v.is_uint64()) return std::to_string(v.get_uint64());
  return std::nullopt;
}

// parse_message, also saying whether the message named its campaign.
std::variant<claim_request, claim_outcome> parse(std::string_view body, bool oversized,
                                                 const std::string& default_campaign, std::string_view transport,
                                                 bool& campaign_named) {
  campaign_named = false;
  auto reject = [&](std::string reason, std::string campaign = {}, std::string user = {}) {
    return rejected_outcome(std::move(campaign), std::move(user), std::move(reason));
  };
  if (oversized) return reject(fmt::format("message is longer than {} bytes", k_max_message_bytes));
  if (!utf8_length(body)) return reject("message is not valid UTF-8");
  boost::system::error_code ec;
  const auto json = boost::json::parse(body, ec);
  if (ec) return reject(fmt::format("malformed JSON: {}", ec.message()));
  if (!json.is_object()) return reject("message is not a JSON object");
  if (const auto key = repeated_key(body))
    return reject(fmt::format("message names \"{}\" twice", printable_excerpt(*key)));
  const auto& obj = json.get_object();

  claim_request r;
  r.campaign = default_campaign;
  if (const auto* c = obj.if_contains("campaign"); c && !c->is_null()) {
    if (!c->is_string()) return reject("campaign must be a string");
    r.campaign = std::string{c->get_string()};
    campaign_named = true;
  }
  if (const auto* m = obj.if_contains("message_id"); m && !m->is_null()) {
    auto id = text_or_integer(*m);
    if (!id) return reject("message_id must be a string or an integer", r.campaign);
    r.message_id = std::move(*id);
  }
  std::string message_source;
  if (const auto* n = obj.if_contains("message_source"); n && !n->is_null()) {
    if (!n->is_string()) return reject("message_source must be a string", r.campaign);
    message_source = std::string{n->get_string()};
    if (auto problem = message_source_problem(message_source))
      return rejected_outcome(r.campaign, {}, *problem, r.message_id);
  }
  r.source = outcome_source(transport, message_source);
  const auto* u = obj.if_contains("user_id");
  if (!u || u->is_null()) return reject("message has no user_id", r.campaign, {});
  auto user = text_or_integer(*u);
  if (!user) return reject("user_id must be a string or an integer", r.campaign);
  r.user_id = std::move(*user);
  if (r.campaign.empty())
    return reject(campaign_named ? "campaign is empty" : "message names no campaign and the worker has no --campaign", {},
                  r.user_id);
  if (auto problem = request_problem(r)) return rejected_outcome(r.campaign, r.user_id, *problem, r.message_id);
  return r;
}

}  // namespace

std::variant<claim_request, claim_outcome> parse_message(std::string_view body, bool oversized,
                                                         const std::string& default_campaign,
                                                         std::string_view transport) {
  bool named = false;
  return parse(body, oversized, default_campaign, transport, named);
}

std::optional<queued_request> queued_request_of(std::string_view body) {
  // Parsed as the worker will; "a" stands for whatever --campaign it has (a
  // valid name, so that only the message's own fields can reject it).
  if (body.size() > k_max_message_bytes) return std::nullopt;
  bool named = false;
  auto parsed = parse(body, false, "a", "pg", named);
  auto* r = std::get_if<claim_request>(&parsed);
  if (!r) return std::nullopt;
  if (!named) return queued_request{std::move(r->user_id), std::nullopt};
  return queued_request{std::move(r->user_id), std::move(r->campaign)};
}

bool is_malformed(const claim_outcome& o) {
  return o.status == claim_status::rejected &&
         (o.reason.starts_with("malformed JSON") || o.reason == "message is not valid UTF-8" ||
          o.reason == "message is not a JSON object" || o.reason.starts_with("message is longer than"));
}

std::string bytea_hex(std::string_view body) {
  static constexpr char k_digits[] = "0123456789abcdef";
  const auto n = std::min(body.size(), k_dead_letter_body_bytes);
  std::string out = "\\x";
  out.reserve(2 + 2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(body[i]);
    out += k_digits[c >> 4];
    out += k_digits[c & 15];
  }
  return out;
}

}  // namespace voucherd
