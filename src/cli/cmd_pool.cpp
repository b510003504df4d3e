// migrate, campaign create, import, generate, stats.
#include <fstream>
#include <iostream>

#include <boost/json/array.hpp>
#include <fmt/format.h>

#include "cli/commands.hpp"
#include "cli/retention_flags.hpp"
#include "common/failure.hpp"
#include "db/migrator.hpp"
#include "db/session.hpp"
#include "pool/campaign.hpp"
#include "pool/code_generator.hpp"
#include "pool/code_import.hpp"

namespace voucherd::cli {

int run_migrate(const args& a) {
  common_flags url_flag;
  std::string dir;
  po::options_description desc{"voucherd migrate: apply pending migrations (a no-op when up to date)"};
  add_common(desc, url_flag);
  desc.add_options()("dir", po::value(&dir),
                     "apply the *.sql files of DIR instead of the migrations built into voucherd");
  po::variables_map vm;
  if (!parse(a, "voucherd migrate [--dir DIR]", desc, {}, vm)) return k_exit_ok;
  const auto files = dir.empty() ? embedded_migrations() : read_migration_dir(dir);
  auto db = open_migration_session(resolve_common(url_flag, "migrate", db_profile::maintenance));
  const auto report = apply_migrations(db.conn(), files);
  boost::json::object out;
  out["status"] = "ok";
  boost::json::array applied;
  for (const auto& name : report.applied) applied.emplace_back(name);
  out["applied"] = std::move(applied);
  out["already_applied"] = report.already_applied;
  print_json(out);
  return k_exit_ok;
}

int run_campaign(const args& a) {
  if (a.empty() || a[0] != "create") {
    if (!a.empty() && (a[0] == "--help" || a[0] == "-h")) {
      std::cout << "usage: voucherd campaign create NAME [--starts-at T] [--ends-at T]\n";
      return k_exit_ok;
    }
    throw voucherd_error{failure_kind::usage,
                         "voucherd campaign needs a subcommand: voucherd campaign create NAME [--starts-at T] [--ends-at T]"};
  }
  common_flags url_flag;
  campaign_spec spec;
  po::options_description desc{"voucherd campaign create: create a campaign"};
  add_common(desc, url_flag);
  desc.add_options()
      ("name", po::value(&spec.name)->required(), "campaign name (slug: a-z, 0-9, '-', '_')")
      ("starts-at", po::value(&spec.starts_at), "claims before this time are rejected (ISO 8601)")
      ("ends-at", po::value(&spec.ends_at), "claims from this time on are rejected (ISO 8601)");
  po::variables_map vm;
  if (!parse(args(a.begin() + 1, a.end()), "voucherd campaign create NAME [--starts-at T] [--ends-at T]", desc,
             {"name"}, vm))
    return k_exit_ok;
  auto db = open_session(resolve_common(url_flag, "campaign"));
  // A rejected create still answers on stdout, as every machine-facing command does.
  return answering_refusals(spec.name, [&] {
    print_json(create_campaign(db.conn(), spec));
    return k_exit_ok;
  });
}

int run_import(const args& a) {
  common_flags url_flag;
  std::string campaign, path;
  po::options_description desc{"voucherd import: load codes (one per line, or CSV with a `code` column), "
                               "all or nothing"};
  add_common(desc, url_flag);
  desc.add_options()
      ("campaign", po::value(&campaign)->required(), "campaign name")
      ("file", po::value(&path)->required(), "code file; - reads stdin");
  po::variables_map vm;
  if (!parse(a, "voucherd import --campaign NAME FILE", desc, {"file"}, vm)) return k_exit_ok;
  std::ifstream file;
  std::istream& in = open_input(path, file);
  auto db = open_session(resolve_common(url_flag, "import", db_profile::maintenance));
  import_report report;
  if (const int refused = answering_refusals(campaign, [&] {
        report = import_codes(db.conn(), campaign, in, [](std::size_t lines) {
          say(fmt::format("import: {} lines read", lines));
        });
        return k_exit_ok;
      }))
    return refused;
  // Said, as a file whose first code is "Code" would lose it to this.
  if (report.csv_column)
    say(fmt::format("import: line 1 is a CSV header; the codes are read from its column {}", *report.csv_column + 1));
  boost::json::object out;
  out["campaign"] = campaign;
  out["lines"] = report.lines;
  if (report.ok()) {
    out["status"] = "imported";
    out["added"] = report.added;
    print_json(out);
    return k_exit_ok;
  }
  boost::json::array errors;
  for (const auto& e : report.errors) {
    say(fmt::format("{}: line {}: {}", path, e.line, e.message));
    errors.push_back(boost::json::object{{"line", e.line}, {"error", e.message}});
  }
  if (report.error_count > report.errors.size())
    say(fmt::format("... and {} more bad lines", report.error_count - report.errors.size()));
  say(fmt::format("nothing imported: {} bad line(s) in {}", report.error_count, path));
  out["status"] = "rejected";
  out["reason"] = "bad lines in the file; nothing was imported";
  out["error_count"] = report.error_count;
  out["errors"] = std::move(errors);
  print_json(out);
  return k_exit_rejected;
}

int run_generate(const args& a) {
  common_flags url_flag;
  std::string campaign;
  std::int64_t count = 0;
  std::size_t length = k_default_code_length;
  po::options_description desc{"voucherd generate: add N random codes to a campaign"};
  add_common(desc, url_flag);
  desc.add_options()
      ("campaign", po::value(&campaign)->required(), "campaign name")
      ("count", po::value(&count)->required(), "how many codes (1..10000000)")
      ("length", po::value(&length)->default_value(k_default_code_length),
       "characters per code (4..64), from an alphabet without look-alikes");
  po::variables_map vm;
  if (!parse(a, "voucherd generate --campaign NAME --count N [--length 8]", desc, {}, vm)) return k_exit_ok;
  if (count < 1 || count > 10'000'000) throw voucherd_error{failure_kind::usage, "--count must be 1..10000000"};
  if (length < k_min_code_length || length > k_max_code_length)
    throw voucherd_error{failure_kind::usage, fmt::format("--length must be {}..{}", k_min_code_length, k_max_code_length)};
  // Random draws that must all differ: past half of the possible codes they
  // repeat more often than not, and past all of them they never end.
  if (const auto possible = possible_codes(length); count > possible / 2)
    throw voucherd_error{failure_kind::usage,
                         fmt::format("--count {} is more than half of the {} possible codes of length {}; "
                                     "use a longer --length",
                                     count, possible, length)};
  auto db = open_session(resolve_common(url_flag, "generate", db_profile::maintenance));
  return answering_refusals(campaign, [&] {
    const auto added = generate_codes(db.conn(), campaign, count, length, [](std::size_t n) {
      say(fmt::format("generate: {} codes made", n));
    });
    print_json({{"status", "generated"}, {"campaign", campaign}, {"added", added}, {"length", length}});
    return k_exit_ok;
  });
}

int run_stats(const args& a) {
  common_flags url_flag;
  std::string campaign;
  retention_flags retention;
  po::options_description desc{
      "voucherd stats: pool, outbox and queue counts of a campaign, and what is waiting: "
      "outbox_oldest_pending_s (the campaign's oldest undelivered notification), and under \"prunable\" the rows "
      "of the whole database that `voucherd prune` with the same --keep-* options would delete"};
  add_common(desc, url_flag);
  desc.add_options()("campaign", po::value(&campaign)->required(), "campaign name");
  add_retention_options(desc, retention);
  po::variables_map vm;
  if (!parse(a, "voucherd stats --campaign NAME", desc, {}, vm)) return k_exit_ok;
  const auto config = resolve_retention(retention);
  const auto common = resolve_common(url_flag, "stats");
  auto db = open_session(common);
  boost::json::object stats;
  if (const int refused = answering_refusals(campaign, [&] {
        stats = campaign_stats(db.conn(), campaign);
        return k_exit_ok;
      }))
    return refused;
  const auto waiting = retention_pruner{common.database_url, config, common.pooling}.read_backlog();
  boost::json::object prunable;
  for (const auto kind : k_retained_kinds) prunable[to_string(kind)] = waiting.prunable[static_cast<std::size_t>(kind)];
  stats["prunable"] = std::move(prunable);
  print_json(stats);
  return k_exit_ok;
}

}  // namespace voucherd::cli
