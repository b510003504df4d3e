// bench and bench-pod: the race lab of SPEC section 7. `bench` runs one
// configuration (one JSON line) or, with --compare, the matrix of every
// strategy at each pod count (a Markdown table); `bench-pod` is the hidden
// per-process worker it spawns.
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <memory>

#include <fmt/format.h>

#include "bench/bench_pod.hpp"
#include "bench/race_lab.hpp"
#include "bench/claim_strategy.hpp"
#include "cli/commands.hpp"
#include "common/failure.hpp"
#include "redis/redis_server.hpp"

namespace voucherd::cli {

namespace {

inline constexpr int k_own_redis_nodes = 3;

std::vector<int> parse_pod_list(const std::string& text) {
  std::vector<int> out;
  std::string_view rest = text;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const auto item = rest.substr(0, comma);
    int v = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (ec != std::errc{} || end != item.data() + item.size())
      throw voucherd_error{failure_kind::usage, fmt::format("--pods: '{}' is not a number", item)};
    out.push_back(v);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  if (out.empty()) throw voucherd_error{failure_kind::usage, "--pods needs a number"};
  return out;
}

}  // namespace

int run_bench(const args& a) {
  common_flags url_flag;
  std::string redis_nodes, pods_text = "2";
  long work_ms = 0, jitter_ms = 0, ttl_ms = 1000, delay_ms = 5, pause_ms = 0;
  bench::bench_config base;
  po::options_description desc{
      "voucherd bench: the race lab. P pod processes claim for M distinct users with one strategy on a "
      "fresh campaign; the run is audited (what each user was told against what the database says they "
      "own) and reported as one JSON line. Progress goes to stderr"};
  add_common(desc, url_flag);
  desc.add_options()
      ("strategy", po::value(&base.strategy)->default_value(base.strategy),
       "skip-locked | naive | redlock | redlock-delay | redlock-global")
      ("pods", po::value(&pods_text)->default_value(pods_text), "pod processes (with --compare: a list, e.g. 2,8)")
      ("messages", po::value(&base.messages)->default_value(base.messages), "messages, one per distinct user")
      ("vouchers", po::value(&base.vouchers)->default_value(base.vouchers), "codes in the pool")
      ("work-ms", po::value(&work_ms)->default_value(work_ms), "simulated work between read and write")
      ("jitter-ms", po::value(&jitter_ms)->default_value(jitter_ms), "uniform ± jitter on the work")
      ("lock-ttl-ms", po::value(&ttl_ms)->default_value(ttl_ms), "Redlock TTL")
      ("release-delay-ms", po::value(&delay_ms)->default_value(delay_ms), "redlock-delay: hold after the write")
      ("pause-ms", po::value(&pause_ms)->default_value(pause_ms),
       "freeze pod 0 (SIGSTOP) this long right before one of its writes, holding its lock; make it longer "
       "than the TTL")
      ("redis-nodes", po::value(&redis_nodes),
       "Redlock nodes redis://host:port,...; default: start 3 throwaway redis-servers")
      ("seed", po::value(&base.seed)->default_value(base.seed), "seed of the simulated work")
      ("compare", "run every strategy at each pod count (+ redlock-global paused past its TTL); "
                  "print a Markdown table")
      ("json", "with --compare, also print each run's JSON line");
  po::variables_map vm;
  if (!parse(a, "voucherd bench --strategy S --pods P --messages M --vouchers V [--work-ms W] [--jitter-ms J] "
                "[--lock-ttl-ms T] [--pause-ms X] [--redis-nodes URLS] [--compare] [--json]",
             desc, {}, vm))
    return k_exit_ok;
  base.database_url = resolve_common(url_flag, "bench", db_profile::maintenance).database_url;
  base.work = std::chrono::milliseconds{work_ms};
  base.jitter = std::chrono::milliseconds{jitter_ms};
  base.lock_ttl = std::chrono::milliseconds{ttl_ms};
  base.release_delay = std::chrono::milliseconds{delay_ms};
  base.pause = std::chrono::milliseconds{pause_ms};
  base.redis_nodes = parse_redis_nodes(redis_nodes);
  const bool compare = vm.count("compare") > 0;
  const auto pod_counts = parse_pod_list(pods_text);
  if (!compare && pod_counts.size() != 1)
    throw voucherd_error{failure_kind::usage, "--pods takes one number unless --compare is given"};

  std::vector<bench::bench_config> runs;
  for (int pods : pod_counts) {
    auto c = base;
    c.pods = pods;
    if (!compare) {
      runs.push_back(c);
      continue;
    }
    c.pause = std::chrono::milliseconds{0};
    for (auto name : strategy_names()) {
      c.strategy = std::string(name);
      runs.push_back(c);
    }
    // The pause row: a lock holder frozen past its TTL.
    c.strategy = "redlock-global";
    c.pause = pause_ms > 0 ? base.pause : base.lock_ttl * 2 + std::chrono::milliseconds{200};
    runs.push_back(c);
  }
  for (const auto& c : runs) {
    auto check = c;
    if (check.redis_nodes.empty()) check.redis_nodes.push_back({"127.0.0.1", 1});  // filled in below
    check.validate();
  }

  std::vector<std::unique_ptr<redis_server>> own_redis;
  const bool needs_redis = std::any_of(runs.begin(), runs.end(),
                                       [](const auto& c) { return strategy_uses_redis(c.strategy); });
  if (needs_redis && base.redis_nodes.empty()) {
    own_redis = start_redis_servers(k_own_redis_nodes);
    say(fmt::format("bench: started {} redis-servers: {}", k_own_redis_nodes, to_string(endpoints_of(own_redis))));
    for (auto& c : runs) c.redis_nodes = endpoints_of(own_redis);
  }

  for (const auto& c : runs)
    if (c.pause.count() > 0 && c.pause <= c.lock_ttl)
      say(fmt::format("bench: --pause-ms {} is not longer than --lock-ttl-ms {}: the paused holder keeps its lock",
                      c.pause.count(), c.lock_ttl.count()));

  const auto exe = self_executable();
  std::vector<bench::bench_report> reports;
  for (const auto& c : runs) {
    reports.push_back(bench::run_bench(c, exe));
    if (!compare || vm.count("json")) print_line(bench::to_json_line(reports.back()));
  }
  if (compare) {
    const auto table = bench::markdown_table(reports);
    std::fwrite(table.data(), 1, table.size(), stdout);
    std::fflush(stdout);
  }
  return k_exit_ok;
}

int run_bench_pod(const args& a) {
  common_flags url_flag;
  std::string redis_nodes;
  long work_ms = 0, jitter_ms = 0, ttl_ms = 1000, delay_ms = 5;
  bench::pod_config c;
  po::options_description desc{"voucherd bench-pod: one pod of `voucherd bench` (internal)"};
  add_common(desc, url_flag);
  desc.add_options()
      ("strategy", po::value(&c.strategy)->required(), "claim strategy")
      ("campaign", po::value(&c.campaign)->required(), "campaign")
      ("pod", po::value(&c.pod)->required(), "this pod's index")
      ("pods", po::value(&c.pods)->required(), "pods in the run")
      ("messages", po::value(&c.messages)->required(), "messages in the run")
      ("record", po::value(&c.record_path)->required(), "JSON-lines file of what each user was told")
      ("work-ms", po::value(&work_ms), "")
      ("jitter-ms", po::value(&jitter_ms), "")
      ("lock-ttl-ms", po::value(&ttl_ms), "")
      ("release-delay-ms", po::value(&delay_ms), "")
      ("seed", po::value(&c.options.seed), "")
      ("pause-at", po::value(&c.pause_at), "SIGSTOP itself before the write of this claim")
      ("redis-nodes", po::value(&redis_nodes), "");
  po::variables_map vm;
  if (!parse(a, "voucherd bench-pod (started by voucherd bench)", desc, {}, vm)) return k_exit_ok;
  if (c.pods < 1 || c.pod < 0 || c.pod >= c.pods) throw voucherd_error{failure_kind::usage, "bad --pod/--pods"};
  c.database_url = resolve_common(url_flag, "bench", db_profile::maintenance).database_url;
  c.options.redis_nodes = parse_redis_nodes(redis_nodes);
  c.options.work = std::chrono::milliseconds{work_ms};
  c.options.jitter = std::chrono::milliseconds{jitter_ms};
  c.options.lock_ttl = std::chrono::milliseconds{ttl_ms};
  c.options.release_delay = std::chrono::milliseconds{delay_ms};
  return bench::run_pod(std::move(c));
}

}  // namespace voucherd::cli
