#include "db/fixed_limit.hpp"

#include <algorithm>
#include <cctype>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace voucherd {

namespace {

struct fixed_statement {
  std::string name;
  std::string text;
  sql_statement statement;
};

// The text with every -- comment (outside quotes) blanked, so that what is
// found in it is code; positions are the text's.
std::string code_only(std::string_view text) {
  std::string code{text};
  bool quoted = false;
  for (std::size_t i = 0; i < code.size(); ++i) {
    if (code[i] == '\'') quoted = !quoted;
    if (!quoted && code.compare(i, 2, "--") == 0)
      for (; i < code.size() && code[i] != '\n'; ++i) code[i] = ' ';
  }
  return code;
}

// Each $n of the code, in order.
std::vector<int> parameters_in(const std::string& code) {
  std::vector<int> out;
  const std::regex placeholder{R"(\$([0-9]+))"};
  for (auto it = std::sregex_iterator(code.begin(), code.end(), placeholder); it != std::sregex_iterator(); ++it)
    out.push_back(std::stoi((*it)[1].str()));
  return out;
}

int highest_of(const std::vector<int>& used) { return used.empty() ? 0 : *std::max_element(used.begin(), used.end()); }

std::string fixed_text(const sql_statement& statement, std::size_t limit) {
  const std::string text{statement.text};
  const std::string code = code_only(text);
  const auto used = parameters_in(code);
  const int highest = highest_of(used);
  const auto uses = std::count(used.begin(), used.end(), highest);
  const auto limit_clause = fmt::format("LIMIT ${}", highest);
  const auto at = code.find(limit_clause);
  // "LIMIT $1" must not be the start of "LIMIT $12".
  const auto end = at + limit_clause.size();
  const bool whole = at != std::string::npos && (end == code.size() || !std::isdigit(static_cast<unsigned char>(code[end])));
  if (highest == 0 || uses != 1 || !whole)
    throw std::logic_error{fmt::format("statement {}: its last parameter is not used once, as LIMIT", statement.name)};
  return text.substr(0, at) + fmt::format("LIMIT {}", limit) + text.substr(end);
}

}  // namespace

int highest_parameter(std::string_view text) { return highest_of(parameters_in(code_only(text))); }

const sql_statement& with_fixed_limit(const sql_statement& statement, std::size_t limit) {
  static std::mutex guard;
  static std::map<std::pair<std::string, std::size_t>, std::unique_ptr<fixed_statement>> made;
  std::lock_guard lock{guard};
  auto& slot = made[{std::string{statement.name}, limit}];
  if (!slot) {
    auto text = fixed_text(statement, limit);  // may throw: nothing is kept then
    auto made_one = std::make_unique<fixed_statement>();
    made_one->text = std::move(text);
    made_one->name = fmt::format("{}/limit={}", statement.name, limit);
    made_one->statement = sql_statement{made_one->name, made_one->text};
    slot = std::move(made_one);
  }
  return slot->statement;
}

}  // namespace voucherd
