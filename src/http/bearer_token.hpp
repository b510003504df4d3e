#pragma once
// The shared secret of `worker --http` beyond loopback (RFC 6750 bearer
// token): a request is admitted when its header reads
// "Authorization: Bearer <token>".
//
// Only a SHA-256 digest of the token is kept, and a presented token is
// compared by digest with CRYPTO_memcmp, so the comparison takes the same
// time whatever the presented token, its length included. The token itself
// is never logged or echoed in a message.
#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace voucherd {

class bearer_token {
 public:
  static constexpr std::size_t k_min_length = 16;

  // Throws voucherd_error(config) for a token shorter than k_min_length or
  // holding characters RFC 6750 does not allow (token68: letters, digits and
  // -._~+/ with trailing =). `source` names where it came from, for the
  // message ("--http-token-file /run/secrets/token").
  bearer_token(std::string_view token, std::string_view source);

  // Whether an Authorization header value carries this token. The scheme is
  // case-insensitive (RFC 7235); an absent header is "".
  bool admits(std::string_view authorization) const;

 private:
  using digest = std::array<unsigned char, 32>;
  static digest digest_of(std::string_view text);
  digest digest_;
};

}  // namespace voucherd
