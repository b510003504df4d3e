#pragma once
// Cryptographically random text (getrandom(2)): voucher codes and lock tokens.
#include <cstddef>
#include <string>
#include <string_view>

namespace voucherd {

// `length` characters drawn from `alphabet` (at most 256 distinct
// characters), each equally likely: bytes that would bias the draw are
// drawn again rather than folded by modulo.
std::string random_string(std::size_t length, std::string_view alphabet);

}  // namespace voucherd
