// claim and claim-batch: the per-message entry point for queue adapters, and
// the admin's employee import.
#include <fstream>
#include <iostream>

#include <fmt/format.h>

#include "claim/claim_core.hpp"
#include "bench/claim_strategy.hpp"
#include "cli/commands.hpp"
#include "common/failure.hpp"
#include "common/text_lines.hpp"
#include "db/session.hpp"
#include "pool/campaign.hpp"

namespace voucherd::cli {

int run_claim(const args& a) {
  common_flags url_flag;
  std::string strategy{k_default_strategy}, redis_nodes;
  long release_delay_ms = 5, lock_ttl_ms = 1000;
  claim_request request;
  std::string message_source;
  po::options_description desc{
      "voucherd claim: give one user one voucher and print the outcome.\n"
      "Exit: 0 claimed/already_claimed (ack), 3 sold_out (ack), 64 usage, 65 rejected (dead-letter), "
      "75 transient: database unreachable, lock wait or statement timed out, retries exhausted (retry later)"};
  add_common(desc, url_flag);
  desc.add_options()
      ("campaign", po::value(&request.campaign)->required(), "campaign name")
      ("user", po::value(&request.user_id)->required(), "user id (1..128 printable characters)")
      ("message-id", po::value(&request.message_id),
       "the message's id: its outcome is recorded once, under source cli[:NAME]; the same id again for "
       "another user or campaign is rejected (65)")
      ("message-source", po::value(&message_source),
       "NAME: a namespace for --message-id (e.g. the queue an adapter reads), so that the ids of two "
       "adapters never collide (A-Z a-z 0-9 . _ -, up to 64)")
      ("strategy", po::value(&strategy)->default_value(strategy),
       "skip-locked (default) | naive | redlock | redlock-delay | redlock-global; "
       "all but skip-locked exist only for comparison (SPEC section 7)")
      ("redis-nodes", po::value(&redis_nodes), "Redlock nodes: redis://host:port,... (redlock* strategies)")
      ("release-delay-ms", po::value(&release_delay_ms)->default_value(release_delay_ms),
       "redlock-delay: keep the lock this long after the write")
      ("lock-ttl-ms", po::value(&lock_ttl_ms)->default_value(lock_ttl_ms), "Redlock TTL");
  po::variables_map vm;
  if (!parse(a, "voucherd claim --campaign NAME --user ID [--message-id M [--message-source NAME]] [--strategy S]",
             desc, {}, vm))
    return k_exit_ok;
  if (auto problem = message_source_problem(message_source))
    throw voucherd_error{failure_kind::usage, "--message-source: " + *problem};
  request.source = outcome_source("cli", message_source);
  if (release_delay_ms < 0 || lock_ttl_ms < 1)
    throw voucherd_error{failure_kind::usage, "--release-delay-ms must be >= 0 and --lock-ttl-ms >= 1"};
  strategy_options options;
  options.redis_nodes = parse_redis_nodes(redis_nodes);
  options.release_delay = std::chrono::milliseconds{release_delay_ms};
  options.lock_ttl = std::chrono::milliseconds{lock_ttl_ms};
  // Bad input is answered before connecting: it must not depend on, or touch, the database.
  if (auto problem = request_problem(request)) {
    const auto outcome = rejected_outcome(request.campaign, request.user_id, *problem, request.message_id);
    print_line(to_json_line(outcome));
    return exit_code_for(outcome);
  }
  const auto common = resolve_common(url_flag, "claim");
  claim_outcome outcome;
  if (strategy == k_default_strategy) {
    blocking_claimer claimer{common.database_url, pg_deadlines::of(common.db), common.pooling};
    outcome = claimer.claim(request);
  } else {
    auto db = open_session(common);
    outcome = make_strategy(strategy, db, options)->claim(request);
  }
  print_line(to_json_line(outcome));
  return exit_code_for(outcome);
}

int run_claim_batch(const args& a) {
  common_flags url_flag;
  std::string campaign, path;
  std::size_t batch_size = claim_core::k_max_statement_batch;
  po::options_description desc{
      "voucherd claim-batch: claim for every user id in FILE (one per line), a batch per statement; "
      "one outcome line per user, in file order"};
  add_common(desc, url_flag);
  desc.add_options()
      ("campaign", po::value(&campaign)->required(), "campaign name")
      ("file", po::value(&path)->required(), "user id file; - reads stdin")
      ("batch-size", po::value(&batch_size)->default_value(claim_core::k_max_statement_batch),
       "users per statement (1..1000)");
  po::variables_map vm;
  if (!parse(a, "voucherd claim-batch --campaign NAME FILE [--batch-size 1000]", desc, {"file"}, vm))
    return k_exit_ok;
  if (batch_size < 1 || batch_size > claim_core::k_max_statement_batch)
    throw voucherd_error{failure_kind::usage,
                         fmt::format("--batch-size must be 1..{}", claim_core::k_max_statement_batch)};
  std::ifstream file;
  std::istream& in = open_input(path, file);

  const auto common = resolve_common(url_flag, "claim-batch");
  // A misspelled campaign would answer every line "unknown campaign" and
  // exit 0, so an import script would report success: refused once, before
  // the file is read, with claim's exit status for it (65). A campaign
  // outside its start/end window is answered line by line: its owners still
  // get their codes (already_claimed), as from claim, so a re-run after a
  // lost output recovers them.
  if (const int refused = answering_refusals(campaign, [&] {
        auto db = open_session(common);
        pqxx::work txn{db.conn()};
        find_campaign(txn, campaign);
        return k_exit_ok;
      }))
    return refused;
  blocking_claimer claimer{common.database_url, pg_deadlines::of(common.db), common.pooling};
  std::vector<claim_request> batch;
  std::size_t done = 0;
  auto flush = [&] {
    for (const auto& outcome : claimer.claim_batch(batch)) print_line(to_json_line(outcome));
    done += batch.size();
    if (done % 100000 < batch.size()) say(fmt::format("claim-batch: {} users done", done));
    batch.clear();
  };
  std::string line;
  // Far past k_max_user_id_chars: a line cut to this is still a user id too long.
  constexpr std::size_t k_max_user_line_bytes = 64 * 1024;
  text_lines lines{in, path == "-" ? "stdin" : path, k_max_user_line_bytes};
  while (lines.next(line)) {
    batch.push_back({campaign, line, {}});
    if (batch.size() == batch_size) flush();
  }
  if (!batch.empty()) flush();
  return k_exit_ok;
}

}  // namespace voucherd::cli
