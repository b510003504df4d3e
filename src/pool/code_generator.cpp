#include "pool/code_generator.hpp"

#include <sys/random.h>

#include <array>
#include <cerrno>
#include <system_error>

namespace voucherd {

namespace {

void fill_random(unsigned char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t got = getrandom(data, size, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw std::system_error{errno, std::generic_category(), "getrandom"};
    }
    data += got;
    size -= static_cast<std::size_t>(got);
  }
}

}  // namespace

std::string random_code(std::size_t length) {
  // Rejection sampling: bytes at or above the largest multiple of the alphabet
  // size are drawn again, so every character is equally likely.
  constexpr std::size_t n = k_code_alphabet.size();
  constexpr unsigned limit = 256 - (256 % n);
  std::string code;
  code.reserve(length);
  std::array<unsigned char, 64> buf{};
  while (code.size() < length) {
    fill_random(buf.data(), buf.size());
    for (unsigned char b : buf) {
      if (b >= limit) continue;
      code.push_back(k_code_alphabet[b % n]);
      if (code.size() == length) break;
    }
  }
  return code;
}

}  // namespace voucherd
