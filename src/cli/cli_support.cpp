#include "cli/cli_support.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/failure.hpp"

namespace voucherd::cli {

void add_common(po::options_description& desc, std::string& database_url_flag) {
  desc.add_options()
      ("database-url", po::value(&database_url_flag),
       "Postgres URL; default: $DATABASE_URL, then libpq's PG* variables. "
       "Prefer PGPASSWORD or PGPASSFILE for the password.")
      ("help,h", "show this help");
}

common_options resolve_common(const std::string& database_url_flag) {
  common_options o;
  if (!database_url_flag.empty()) o.database_url = database_url_flag;
  else if (const char* env = std::getenv("DATABASE_URL")) o.database_url = env;
  return o;
}

bool parse(const args& a, const std::string& usage, po::options_description& desc,
           const std::vector<std::string>& positional, po::variables_map& vm) {
  po::positional_options_description pos;
  for (const auto& name : positional) pos.add(name.c_str(), 1);
  try {
    po::store(po::command_line_parser(a).options(desc).positional(pos).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: " << usage << "\n\n" << desc << std::flush;
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw voucherd_error{failure_kind::usage, fmt::format("{}\nusage: {}", e.what(), usage)};
  }
  return true;
}

void print_line(const std::string& json_line) {
  std::fwrite(json_line.data(), 1, json_line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void print_json(const boost::json::object& line) { print_line(boost::json::serialize(line)); }

void say(const std::string& message) {
  std::fprintf(stderr, "voucherd: %s\n", message.c_str());
  std::fflush(stderr);
}

std::string self_executable() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw voucherd_error{failure_kind::internal, "cannot find my own executable"};
  return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace voucherd::cli
