#pragma once
// The lines of a text file as people and spreadsheets write them: a line's
// CR (CRLF files) and a UTF-8 byte order mark before the first line ("CSV
// UTF-8" from a spreadsheet) are not part of it. Used by every command that
// reads a file of codes, users or messages, so that one file reads the same
// everywhere. A read error (a directory, a device that fails) is an error,
// not the end of the input.
#include <cstddef>
#include <istream>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "common/failure.hpp"

namespace voucherd {

class text_lines {
 public:
  // `name` says what is read in messages ("users.txt", "stdin").
  text_lines(std::istream& in, std::string name) : in_{in}, name_{std::move(name)} {}

  // The next line into `line`; false at the end of the input. Throws
  // voucherd_error(usage) "cannot read NAME" when reading fails.
  bool next(std::string& line) {
    if (!std::getline(in_, line)) {
      if (in_.bad()) throw voucherd_error{failure_kind::usage, fmt::format("cannot read {}", name_)};
      return false;
    }
    ++number_;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (number_ == 1 && line.starts_with(k_utf8_bom)) line.erase(0, k_utf8_bom.size());
    return true;
  }
  // The number of the line last read, from 1; 0 before the first.
  std::size_t number() const { return number_; }

 private:
  static constexpr std::string_view k_utf8_bom = "\xEF\xBB\xBF";
  std::istream& in_;
  std::string name_;
  std::size_t number_ = 0;
};

}  // namespace voucherd
