#pragma once
// Random voucher codes: cryptographically random (getrandom(2)), drawn without
// modulo bias from an alphabet without look-alikes (no 0/O, 1/I/L, 5/S, 2/Z).
#include <cstdint>
#include <string>

namespace voucherd {

inline constexpr std::string_view k_code_alphabet = "ABCDEFGHJKMNPQRTUVWXY346789";
inline constexpr std::size_t k_default_code_length = 8;
inline constexpr std::size_t k_min_code_length = 4;

std::string random_code(std::size_t length);
// How many codes of `length` characters exist (saturates at INT64_MAX).
std::int64_t possible_codes(std::size_t length);

}  // namespace voucherd
