#include "claim/claim_request.hpp"

#include <fmt/format.h>

namespace voucherd {

std::optional<std::size_t> utf8_length(std::string_view s) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < s.size(); ++count) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len;
    char32_t cp;
    if (c < 0x80) { len = 1; cp = c; }
    else if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return std::nullopt;
    if (i + len > s.size()) return std::nullopt;
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return std::nullopt;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Reject overlong forms, surrogates and out-of-range code points.
    static constexpr char32_t k_min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < k_min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return std::nullopt;
    i += len;
  }
  return count;
}

namespace {

bool has_control_character(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F) return true;
    // C1 controls U+0080..U+009F are encoded as C2 80..C2 9F.
    if (c == 0xC2 && i + 1 < s.size()) {
      const auto n = static_cast<unsigned char>(s[i + 1]);
      if (n >= 0x80 && n <= 0x9F) return true;
    }
  }
  return false;
}

std::optional<std::string> text_id_problem(std::string_view what, std::string_view id,
                                           std::size_t max_chars) {
  if (id.empty()) return fmt::format("{} is empty", what);
  // Cheap bound first, so a 10 MB id is not decoded.
  if (id.size() > max_chars * 4) return fmt::format("{} is longer than {} characters", what, max_chars);
  const auto chars = utf8_length(id);
  if (!chars) return fmt::format("{} is not valid UTF-8", what);
  if (*chars > max_chars) return fmt::format("{} is longer than {} characters", what, max_chars);
  if (has_control_character(id)) return fmt::format("{} contains control characters", what);
  return std::nullopt;
}

}  // namespace

std::optional<std::string> user_id_problem(std::string_view user_id) {
  return text_id_problem("user id", user_id, k_max_user_id_chars);
}

std::optional<std::string> message_id_problem(std::string_view message_id) {
  if (message_id.empty()) return std::nullopt;
  return text_id_problem("message id", message_id, k_max_message_id_chars);
}

std::optional<std::string> message_source_problem(std::string_view ns) {
  if (ns.empty()) return std::nullopt;
  if (ns.size() > k_max_message_source_chars)
    return fmt::format("message_source is longer than {} characters", k_max_message_source_chars);
  auto letter_or_digit = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!letter_or_digit(ns.front())) return "message_source must start with a letter or digit";
  for (char c : ns)
    if (!letter_or_digit(c) && c != '.' && c != '_' && c != '-')
      return "message_source may only contain A-Z, a-z, 0-9, '.', '_' and '-'";
  return std::nullopt;
}

std::string outcome_source(std::string_view transport, std::string_view message_source) {
  if (message_source.empty()) return std::string{transport};
  return fmt::format("{}:{}", transport, message_source);
}

std::optional<std::string> campaign_name_problem(std::string_view name) {
  if (name.empty()) return "campaign name is empty";
  if (name.size() > k_max_campaign_name_chars)
    return fmt::format("campaign name is longer than {} characters", k_max_campaign_name_chars);
  auto lower_or_digit = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!lower_or_digit(name.front()))
    return "campaign name must start with a lowercase letter or digit";
  for (char c : name)
    if (!lower_or_digit(c) && c != '-' && c != '_')
      return "campaign name may only contain a-z, 0-9, '-' and '_'";
  return std::nullopt;
}

std::string printable_excerpt(std::string_view text) {
  if (!text_id_problem("text", text, k_max_user_id_chars)) return std::string{text};
  constexpr std::size_t k_keep = 64;
  std::string out;
  std::size_t chars = 0;
  std::size_t i = 0;
  for (; i < text.size() && chars < k_keep; ++chars) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || i + len > text.size() || !utf8_length(text.substr(i, len))) {
      out += "\xEF\xBF\xBD";
      i += 1;
      continue;
    }
    if (len == 1 && (c < 0x20 || c == 0x7F)) out += '?';
    else if (len == 2 && c == 0xC2 && static_cast<unsigned char>(text[i + 1]) <= 0x9F) out += '?';
    else out.append(text.substr(i, len));
    i += len;
  }
  if (i < text.size()) out += "...";
  return out;
}

std::optional<std::string> request_problem(const claim_request& request) {
  if (auto p = campaign_name_problem(request.campaign)) return p;
  if (auto p = user_id_problem(request.user_id)) return p;
  if (auto p = message_id_problem(request.message_id)) return p;
  if (request.message_id.empty()) return std::nullopt;
  return text_id_problem("message source", request.source, k_max_source_chars);
}

}  // namespace voucherd
