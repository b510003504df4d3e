#include "cli/retention_flags.hpp"

#include <fmt/format.h>

namespace voucherd::cli {

void add_retention_options(po::options_description& desc, retention_flags& flags) {
  desc.add_options()
      ("keep-sent", po::value(&flags.keep_sent)->default_value(flags.keep_sent),
       "keep notifications this long after they were sent (e.g. 90s, 30m, 12h, 7d); pending and failed ones are "
       "always kept")
      ("keep-done", po::value(&flags.keep_done)->default_value(flags.keep_done),
       "keep pg queue messages this long after they were done")
      ("keep-outcomes", po::value(&flags.keep_outcomes)->default_value(flags.keep_outcomes),
       fmt::format("keep recorded outcomes this long; must outlast every redelivery of a message (Redis "
                   "claim-idle, client retries), at least {}",
                   format_age(retention_config::k_min_keep_outcomes)).c_str())
      ("keep-dead-letters", po::value(&flags.keep_dead_letters)->default_value(flags.keep_dead_letters),
       "keep dead letters this long")
      ("prune-batch", po::value(&flags.batch)->default_value(flags.batch),
       fmt::format("rows per DELETE, 1..{}; each batch commits on its own and locks only its rows",
                   retention_config::k_max_batch).c_str());
}

retention_config resolve_retention(const retention_flags& flags) {
  retention_config c;
  c.keep_sent = parse_age(flags.keep_sent, "--keep-sent");
  c.keep_done = parse_age(flags.keep_done, "--keep-done");
  c.keep_outcomes = parse_age(flags.keep_outcomes, "--keep-outcomes");
  c.keep_dead_letters = parse_age(flags.keep_dead_letters, "--keep-dead-letters");
  c.batch = flags.batch;
  c.validate();
  return c;
}

}  // namespace voucherd::cli
