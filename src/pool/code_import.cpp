#include "pool/code_import.hpp"

#include <algorithm>
#include <cctype>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>
#include <pqxx/stream_to>
#include <pqxx/pqxx>

#include "common/failure.hpp"
#include "common/text_lines.hpp"
#include "db/session.hpp"
#include "pool/campaign.hpp"
#include "pool/code_generator.hpp"
#include "sql_catalog.hpp"

namespace voucherd {

std::optional<std::string> code_problem(std::string_view code) {
  if (code.empty()) return "empty line (no code)";
  if (code.size() > k_max_code_length)
    return fmt::format("code is {} characters long; at most {} are allowed", code.size(), k_max_code_length);
  for (char c : code) {
    if (c == ' ' || c == '\t') return "code contains a space";
    if (c < '!' || c > '~') return "code contains a character that is not printable ASCII";
  }
  return std::nullopt;
}

namespace {

// Splits one CSV record (RFC 4180 quoting, no embedded newlines); nullopt
// when a quoted field is not closed on its line (an embedded newline, or a
// stray quote: either way the fields cannot be told apart).
std::optional<std::vector<std::string>> split_csv(std::string_view line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') { fields.back() += '"'; ++i; }
      else if (c == '"') quoted = false;
      else fields.back() += c;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else {
      fields.back() += c;
    }
  }
  if (quoted) return std::nullopt;
  return fields;
}

std::string trimmed(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string{s};
}

// The column holding the code when the first line is a CSV header with a
// `code` column, in any case ("Code" from a spreadsheet); nullopt for a
// plain one-code-per-line file.
std::optional<std::size_t> code_column(const std::vector<std::string>& fields) {
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const auto name = trimmed(fields[i]);
    if (name.size() == 4 && std::equal(name.begin(), name.end(), "code", [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) == b;
        }))
      return i;
  }
  return std::nullopt;
}

class error_list {
 public:
  explicit error_list(import_report& report) : report_{report} {}
  void add(std::size_t line, std::string message) {
    if (report_.errors.size() < k_max_reported_errors) report_.errors.push_back({line, std::move(message)});
    ++report_.error_count;
  }

 private:
  import_report& report_;
};

std::int64_t commit_stage(pqxx::work& txn, std::int64_t campaign_id) {
  return exec(txn, sql::import_commit_stage, campaign_id)[0][0].as<std::int64_t>();
}

}  // namespace

import_report import_codes(pqxx::connection& conn, const std::string& campaign, std::istream& in,
                           const progress_fn& progress) {
  import_report report;
  error_list errors{report};
  pqxx::work txn{conn};
  const auto campaign_id = find_campaign(txn, campaign);
  exec(txn, sql::import_stage_create);

  std::unordered_map<std::string, std::size_t> first_line_of;
  {
    pqxx::stream_to stage{txn, "import_stage", std::vector<std::string>{"line", "code"}};
    const auto& csv_column = report.csv_column;
    std::string line;
    // Empty lines are bad lines only with a line after them: the blank lines
    // an editor leaves at the end of a file are not. They come in a run, so
    // its first line is all that is kept (0: none pending).
    std::size_t blank_from = 0;
    text_lines lines{in, "the code file", k_max_import_line_bytes};
    while (lines.next(line)) {
      const auto n = lines.number();
      report.lines = n;
      if (progress && n % k_progress_every_lines == 0) progress(n);
      if (line.empty() && !lines.cut()) {
        if (blank_from == 0) blank_from = n;
        continue;
      }
      for (; blank_from != 0 && blank_from < n; ++blank_from) errors.add(blank_from, *code_problem(""));
      blank_from = 0;
      if (lines.cut()) {
        errors.add(n, fmt::format("line is longer than {} bytes", k_max_import_line_bytes));
        continue;
      }
      if (n == 1) {
        const auto fields = split_csv(line);
        // A first line with a comma whose quotes do not close is a header
        // gone wrong, not a code.
        if (!fields && line.find(',') != std::string::npos) {
          errors.add(n, "CSV header has a quoted field that does not end on the line");
          continue;
        }
        if (fields) report.csv_column = code_column(*fields);
        if (csv_column) continue;
      }
      std::string code = line;
      if (csv_column) {
        auto fields = split_csv(line);
        if (!fields) {
          errors.add(n, "CSV line has a quoted field that does not end on the line");
          continue;
        }
        if (*csv_column >= fields->size()) {
          errors.add(n, fmt::format("CSV line has {} fields; the code is field {}", fields->size(), *csv_column + 1));
          continue;
        }
        code = trimmed((*fields)[*csv_column]);
      }
      if (auto problem = code_problem(code)) {
        errors.add(n, *problem);
        continue;
      }
      auto [it, fresh] = first_line_of.emplace(code, n);
      if (!fresh) {
        errors.add(n, fmt::format("duplicate code {} (first on line {})", code, it->second));
        continue;
      }
      if (report.error_count == 0) stage << std::make_tuple(static_cast<std::int64_t>(n), code);
    }
    stage.complete();
  }
  if (first_line_of.empty() && report.error_count == 0) errors.add(1, "the file has no codes");
  if (report.ok()) {
    // Only now, with every code read and staged: a slow input must not hold
    // the campaign's lock (which stops its free mark, and other imports).
    lock_campaign_for_import(txn, campaign);
    for (const auto& row : exec(txn, sql::import_conflicts, campaign_id))
      errors.add(row[0].as<std::size_t>(),
                 fmt::format("code {} is already in campaign {}", row[1].as<std::string>(), campaign));
  }
  if (!report.ok()) {
    txn.abort();
    return report;
  }
  report.added = commit_stage(txn, campaign_id);
  txn.commit();
  return report;
}

std::int64_t generate_codes(pqxx::connection& conn, const std::string& campaign, std::int64_t count,
                            std::size_t length, const progress_fn& progress) {
  pqxx::work txn{conn};
  const auto campaign_id = find_campaign(txn, campaign);
  exec(txn, sql::import_stage_create);

  std::unordered_set<std::string> made;
  std::int64_t next_line = 1;
  const auto no_room = [&] {
    return voucherd_error{failure_kind::rejected,
                          fmt::format("cannot find unused codes of length {} for campaign {}; use a longer --length",
                                      length, campaign)};
  };
  auto stage_fresh_codes = [&](std::int64_t how_many) {
    // Every draw must differ from those made before: once they are all
    // made, no draw can (the campaign holds the rest), and the loop would
    // never end.
    if (how_many > possible_codes(length) - static_cast<std::int64_t>(made.size())) throw no_room();
    pqxx::stream_to stage{txn, "import_stage", std::vector<std::string>{"line", "code"}};
    for (std::int64_t i = 0; i < how_many;) {
      auto code = random_code(length);
      if (!made.insert(code).second) continue;
      stage << std::make_tuple(next_line++, code);
      ++i;
      if (progress && next_line % static_cast<std::int64_t>(k_progress_every_lines) == 0)
        progress(static_cast<std::size_t>(next_line));
    }
    stage.complete();
  };
  stage_fresh_codes(count);
  lock_campaign_for_import(txn, campaign);  // as in import_codes: only once staged
  // Replace codes that the campaign has already (rare: 27^8 possible codes).
  for (int round = 0;; ++round) {
    auto conflicts = exec(txn, sql::import_conflicts, campaign_id);
    if (conflicts.empty()) break;
    if (round == 20) throw no_room();
    std::string lines;
    for (const auto& row : conflicts) {
      if (!lines.empty()) lines += ',';
      lines += row[0].c_str();
    }
    exec(txn, sql::import_drop_staged, lines);
    stage_fresh_codes(static_cast<std::int64_t>(conflicts.size()));
  }
  const auto added = commit_stage(txn, campaign_id);
  txn.commit();
  return added;
}

import_report import_codes(pqxx::connection& conn, const std::string& campaign, const std::vector<std::string>& codes) {
  std::string lines;
  for (const auto& code : codes) lines += code + '\n';
  std::istringstream in{lines};
  return import_codes(conn, campaign, in);
}

}  // namespace voucherd
