#include "common/random.hpp"

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

std::string random_string(std::size_t length, std::string_view alphabet) {
  // Rejection sampling: bytes at or above the largest multiple of the alphabet
  // size are drawn again, so every character is equally likely.
  const std::size_t n = alphabet.size();
  const unsigned limit = static_cast<unsigned>(256 - (256 % n));
  std::string out;
  out.reserve(length);
  std::array<unsigned char, 64> buf{};
  while (out.size() < length) {
    fill_random(buf.data(), buf.size());
    for (unsigned char b : buf) {
      if (b >= limit) continue;
      out.push_back(alphabet[b % n]);
      if (out.size() == length) break;
    }
  }
  return out;
}

}  // namespace voucherd
