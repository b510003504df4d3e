#pragma once
// What every subcommand shares: the --database-url/--help options, JSON lines
// on stdout, human messages on stderr, and the map from failures to exit codes.
#include <functional>
#include <string>
#include <vector>

#include <boost/json/object.hpp>
#include <boost/program_options.hpp>

namespace voucherd::cli {

namespace po = boost::program_options;

using args = std::vector<std::string>;

struct common_options {
  std::string database_url;  // resolved: --database-url, else $DATABASE_URL, else "" (libpq's PG* variables)
};

// Options every subcommand takes; add them to a description with add_common().
void add_common(po::options_description& desc, std::string& database_url_flag);
common_options resolve_common(const std::string& database_url_flag);

// Parses `a` against desc (+ positional names, in order). Prints help and
// returns false on --help. Throws voucherd_error(usage) on a bad call.
bool parse(const args& a, const std::string& usage, po::options_description& desc,
           const std::vector<std::string>& positional, po::variables_map& vm);

void print_json(const boost::json::object& line);
void print_line(const std::string& json_line);

// Human messages go to stderr, prefixed with "voucherd: ".
void say(const std::string& message);

// The path of this voucherd binary, for commands that start more of it
// (story's workers, bench's pods).
std::string self_executable();

}  // namespace voucherd::cli
