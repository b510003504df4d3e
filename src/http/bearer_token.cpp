#include "http/bearer_token.hpp"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/failure.hpp"

namespace voucherd {

namespace {

bool token68_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' ||
         c == '/';
}

bool is_token68(std::string_view s) {
  const auto body_end = s.find_last_not_of('=');
  if (body_end == std::string_view::npos) return false;
  return std::all_of(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(body_end) + 1, token68_char);
}

}  // namespace

bearer_token::digest bearer_token::digest_of(std::string_view text) {
  digest out{};
  unsigned int length = 0;
  if (EVP_Digest(text.data(), text.size(), out.data(), &length, EVP_sha256(), nullptr) != 1 || length != out.size())
    throw voucherd_error{failure_kind::internal, "SHA-256 of the bearer token failed"};
  return out;
}

bearer_token::bearer_token(std::string_view token, std::string_view source) {
  if (token.size() < k_min_length)
    throw voucherd_error{failure_kind::config,
                         fmt::format("{}: the bearer token must be at least {} characters (e.g. `openssl rand -hex 32`)",
                                     source, k_min_length)};
  if (!is_token68(token))
    throw voucherd_error{failure_kind::config,
                         fmt::format("{}: the bearer token may hold only letters, digits and -._~+/ (then =)", source)};
  digest_ = digest_of(token);
}

bool bearer_token::admits(std::string_view authorization) const {
  constexpr std::string_view k_scheme = "bearer ";
  if (authorization.size() <= k_scheme.size()) return false;
  for (std::size_t i = 0; i < k_scheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != k_scheme[i]) return false;
  auto presented = authorization.substr(k_scheme.size());
  while (!presented.empty() && presented.front() == ' ') presented.remove_prefix(1);
  while (!presented.empty() && presented.back() == ' ') presented.remove_suffix(1);
  // Equal-length digests, whatever was presented: no early exit on length or content.
  const digest seen = digest_of(presented);
  return CRYPTO_memcmp(seen.data(), digest_.data(), digest_.size()) == 0;
}

}  // namespace voucherd
