#include "pool/code_generator.hpp"

#include "common/random.hpp"

namespace voucherd {

std::string random_code(std::size_t length) { return random_string(length, k_code_alphabet); }

}  // namespace voucherd
