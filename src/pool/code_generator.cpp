#include "pool/code_generator.hpp"

#include <limits>

#include "common/random.hpp"

namespace voucherd {

std::string random_code(std::size_t length) { return random_string(length, k_code_alphabet); }

std::int64_t possible_codes(std::size_t length) {
  const auto n = static_cast<std::int64_t>(k_code_alphabet.size());
  std::int64_t total = 1;
  for (std::size_t i = 0; i < length; ++i) {
    if (total > std::numeric_limits<std::int64_t>::max() / n) return std::numeric_limits<std::int64_t>::max();
    total *= n;
  }
  return total;
}

}  // namespace voucherd
