// prune: one retention sweep (maintenance/retention.hpp), from cron or by
// hand; the worker's --prune-every runs the same sweep on a timer.
#include <chrono>

#include <fmt/format.h>

#include "cli/commands.hpp"
#include "cli/retention_flags.hpp"
#include "maintenance/retention.hpp"

namespace voucherd::cli {

int run_prune(const args& a) {
  common_flags url_flag;
  retention_flags retention;
  po::options_description desc{
      "voucherd prune: delete sent notifications, done queue messages, recorded outcomes and dead letters older "
      "than their retention, oldest first, in small batches that lock only the rows they delete (FOR UPDATE SKIP "
      "LOCKED): claims and dispatchers never wait for a prune. Pending and failed notifications and pending "
      "messages are never deleted.\n"
      "Output: JSON lines on stdout: progress at most once a second, {\"kind\":...,\"deleted\":N,\"done\":true} "
      "when a kind is swept, then {\"pruned\":{...},\"elapsed_s\":S}.\n"
      "Defaults: --keep-sent 7d --keep-done 7d --keep-outcomes 30d --keep-dead-letters 30d --prune-batch 1000"};
  add_common(desc, url_flag);
  add_retention_options(desc, retention);
  po::variables_map vm;
  if (!parse(a, "voucherd prune [--keep-sent 7d] [--keep-done 7d] [--keep-outcomes 30d] [--keep-dead-letters 30d]",
             desc, {}, vm))
    return k_exit_ok;
  const auto config = resolve_retention(retention);
  const auto common = resolve_common(url_flag, "prune");
  retention_pruner pruner{common.database_url, config, common.pooling};

  using clock = std::chrono::steady_clock;
  const auto started = clock::now();
  auto last_line = started;
  const auto deleted = pruner.sweep([&](const retention_pruner::progress& p) {
    const auto now = clock::now();
    if (!p.done && now - last_line < std::chrono::seconds{1}) return;
    last_line = now;
    boost::json::object line;
    line["kind"] = to_string(p.kind);
    line["keep"] = format_age(config.keep(p.kind));
    line["deleted"] = p.deleted;
    line["batches"] = p.batches;
    line["done"] = p.done;
    print_json(line);
  });
  boost::json::object pruned;
  for (const auto kind : k_retained_kinds) pruned[to_string(kind)] = deleted[static_cast<std::size_t>(kind)];
  boost::json::object summary;
  summary["pruned"] = std::move(pruned);
  summary["elapsed_s"] = std::chrono::duration<double>(clock::now() - started).count();
  print_json(summary);
  return k_exit_ok;
}

}  // namespace voucherd::cli
