#pragma once
// The lines of a text file as people and spreadsheets write them: a line's
// CR (CRLF files) and a UTF-8 byte order mark before the first line ("CSV
// UTF-8" from a spreadsheet) are not part of it. Used by every command that
// reads a file of codes, users or messages, so that one file reads the same
// everywhere. A read error (a directory, a device that fails) is an error,
// not the end of the input. A line is held to a length the caller chooses,
// so that a file with no newline (a device, a binary) is read in bounded
// memory.
#include <algorithm>
#include <cstddef>
#include <ios>
#include <istream>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "common/failure.hpp"

namespace voucherd {

class text_lines {
 public:
  // `name` says what is read in messages ("users.txt", "stdin"). A line
  // longer than `max_bytes` is cut to its first max_bytes + 1 bytes, so that
  // it still reads as too long to whatever checks its length, and the rest of
  // it is skipped (cut() says so).
  text_lines(std::istream& in, std::string name, std::size_t max_bytes)
      : in_{in}, name_{std::move(name)}, max_bytes_{max_bytes} {}

  // The next line into `line`; false at the end of the input. Throws
  // voucherd_error(usage) "cannot read NAME" when reading fails.
  bool next(std::string& line) {
    line.clear();
    // Kept: up to max_bytes + 2 bytes (room for the line's CR) and, on the
    // first line, its byte order mark, which is no part of it and counts
    // toward no length.
    const std::size_t most = max_bytes_ + 2 + (number_ == 0 ? k_utf8_bom.size() : 0);
    bool any = false, ended = false, dropped = false;
    char piece[8192];
    for (;;) {
      in_.getline(piece, sizeof piece);
      if (in_.bad()) throw voucherd_error{failure_kind::usage, fmt::format("cannot read {}", name_)};
      const auto got = static_cast<std::size_t>(in_.gcount());
      // Stopped at a newline (extracted, not stored), at the end of the
      // input, or with the piece full and the line going on (failbit alone).
      const bool full = in_.fail() && !in_.eof();
      const bool at_newline = !in_.fail() && !in_.eof();
      const std::size_t stored = at_newline ? got - 1 : got;
      if (got > 0) any = true;
      const std::size_t room = most - std::min(line.size(), most);
      if (stored > room) dropped = true;
      line.append(piece, std::min(stored, room));
      if (full) {
        in_.clear();
        continue;
      }
      if (!at_newline) {
        in_.clear(in_.rdstate() & ~std::ios::failbit);  // the end, maybe without a newline
        ended = true;
      }
      break;
    }
    if (!any) return false;
    if (number_ == 0 && line.starts_with(k_utf8_bom)) {
      line.erase(0, k_utf8_bom.size());
      if (line.empty() && ended) return false;  // a file of a byte order mark alone is empty
    }
    ++number_;
    if (!dropped && !line.empty() && line.back() == '\r') line.pop_back();
    cut_ = line.size() > max_bytes_;
    if (cut_) line.resize(max_bytes_ + 1);
    return true;
  }
  // The number of the line last read, from 1; 0 before the first.
  std::size_t number() const { return number_; }
  // Whether the line last read was longer than max_bytes (and cut).
  bool cut() const { return cut_; }

 private:
  static constexpr std::string_view k_utf8_bom = "\xEF\xBB\xBF";
  std::istream& in_;
  std::string name_;
  std::size_t max_bytes_;
  std::size_t number_ = 0;
  bool cut_ = false;
};

}  // namespace voucherd
