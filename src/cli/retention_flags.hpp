#pragma once
// The retention options shared by `prune`, `worker` (--prune-every) and
// `stats` (which counts what a prune would delete), with their defaults.
#include <string>

#include "cli/cli_support.hpp"
#include "maintenance/retention.hpp"

namespace voucherd::cli {

struct retention_flags {
  std::string keep_sent = format_age(retention_config::k_default_keep_sent);
  std::string keep_done = format_age(retention_config::k_default_keep_done);
  std::string keep_outcomes = format_age(retention_config::k_default_keep_outcomes);
  std::string keep_dead_letters = format_age(retention_config::k_default_keep_dead_letters);
  std::size_t batch = retention_config::k_default_batch;
};

void add_retention_options(po::options_description& desc, retention_flags& flags);
// Parsed and validated; throws voucherd_error(usage) naming the option.
retention_config resolve_retention(const retention_flags& flags);

}  // namespace voucherd::cli
