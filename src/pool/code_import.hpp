#pragma once
// Loading voucher codes into a campaign's pool, all or nothing (I6).
//
// Input is one code per line, or CSV whose header has a `code` column. Every
// line is checked (1..64 printable ASCII characters, no spaces, not a
// duplicate of an earlier line or of a code the campaign has); codes are
// streamed into a temporary table with COPY while being checked, and only a
// file without a single bad line is moved into the pool, in one transaction.
#include <cstdint>
#include <functional>
#include <istream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/connection>

namespace voucherd {

inline constexpr std::size_t k_max_code_length = 64;
// A line of the code file longer than this is an error of its own (and is
// read no further): a code file it is not.
inline constexpr std::size_t k_max_import_line_bytes = 64 * 1024;
inline constexpr std::size_t k_max_reported_errors = 1000;
inline constexpr std::size_t k_progress_every_lines = 100000;

struct import_error {
  std::size_t line;  // 1-based line number in the file
  std::string message;
};

struct import_report {
  std::size_t lines = 0;
  std::int64_t added = 0;                 // 0 unless ok()
  std::vector<import_error> errors;       // the first k_max_reported_errors
  std::size_t error_count = 0;            // all of them
  std::optional<std::size_t> csv_column;  // 0-based: line 1 was a CSV header
  bool ok() const { return error_count == 0; }
};

// Called every k_progress_every_lines lines with the number read so far.
using progress_fn = std::function<void(std::size_t lines)>;

// Why a code is unacceptable, or nullopt.
std::optional<std::string> code_problem(std::string_view code);

import_report import_codes(pqxx::connection& conn, const std::string& campaign, std::istream& in,
                           const progress_fn& progress = {});
// The same for codes already in memory (one per element, in id order).
import_report import_codes(pqxx::connection& conn, const std::string& campaign, const std::vector<std::string>& codes);

// Adds `count` new random codes (see code_generator.hpp) to a campaign, in one
// transaction; a generated code that collides with an existing one is
// replaced. Returns the number added (== count).
std::int64_t generate_codes(pqxx::connection& conn, const std::string& campaign, std::int64_t count,
                            std::size_t length, const progress_fn& progress = {});

}  // namespace voucherd
