// voucherd: hands out limited items (voucher codes) from a Postgres pool, one
// atomic statement per claim. See `voucherd --help`.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstdio>
#include <exception>
#include <map>
#include <string>

#include <fmt/format.h>

#include "cli/commands.hpp"
#include "db/classify.hpp"
#include "common/failure.hpp"

// "0.1.0 (git 0123456789ab)": made at build time (scripts/git-version.cmake).
extern const char* const k_voucherd_version;

namespace {

constexpr const char* k_usage = R"(usage: voucherd COMMAND [OPTIONS]   (COMMAND --help for its options)

  migrate                              apply pending migrations
  campaign create NAME                 create a campaign [--starts-at T] [--ends-at T]
  import --campaign NAME FILE          load codes, all or nothing (- reads stdin)
  generate --campaign NAME --count N   add N random codes [--length 8]
  claim --campaign NAME --user ID      claim one voucher [--message-id M]
  claim-batch --campaign NAME FILE     claim for every user id in FILE, in batches
  stats --campaign NAME                pool, outbox and queue counts
  story                                replay the story: two workers, two codes
  notify [--notify log|webhook:URL|redis]  deliver the notification outbox [--once]
  prune [--keep-sent 7d] ...           delete sent notifications, done messages, outcomes, dead letters
  enqueue --source pg|redis FILE       put JSON messages (one per line) on a queue [--campaign NAME]
  worker --source stdin|pg|redis       the claim daemon [--concurrency N] [--batch B] [--http ADDR:PORT]
  bench --strategy S --pods P          race lab: P pods of a claim strategy, audited [--compare]

Every command takes --database-url URL (default: $DATABASE_URL, then libpq's PG* variables)
and bounds every wait on the database: --statement-timeout-ms, --lock-timeout-ms,
--idle-in-transaction-timeout-ms, --connect-timeout-ms (or VOUCHERD_* variables).
Machine output is JSON lines on stdout; messages go to stderr. voucherd --version prints the version.
Exit: 0 ok, 3 sold out, 64 usage, 65 rejected, 70 internal, 75 transient (retry later),
      78 config (wrong database, role, password, certificate or schema: fix the set-up, do not retry).
)";

using command_fn = int (*)(const voucherd::cli::args&);

const std::map<std::string, command_fn>& commands() {
  namespace cli = voucherd::cli;
  static const std::map<std::string, command_fn> k_commands{
      {"migrate", cli::run_migrate},     {"campaign", cli::run_campaign},
      {"import", cli::run_import},       {"generate", cli::run_generate},
      {"claim", cli::run_claim},         {"claim-batch", cli::run_claim_batch},
      {"stats", cli::run_stats},         {"story", cli::run_story},
      {"notify", cli::run_notify},       {"prune", cli::run_prune},
      {"worker", cli::run_worker},       {"enqueue", cli::run_enqueue},
      {"bench", cli::run_bench},         {"bench-pod", cli::run_bench_pod},
  };
  return k_commands;
}

// Started with stdin, stdout or stderr closed (`<&-`, a careless
// supervisor), the next file voucherd opens would take that number: a
// database socket as fd 0 was read as the code file, as fd 1 written with
// JSON lines. Each closed one is opened on /dev/null first.
void open_standard_descriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1) continue;
    const int opened = ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (opened != fd && opened >= 0) ::close(opened);  // something else took fd; leave it be
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace voucherd;
  open_standard_descriptors();
  if (argc < 2) {
    std::fputs(k_usage, stderr);
    return k_exit_usage;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    std::fputs(k_usage, stdout);
    return k_exit_ok;
  }
  if (name == "--version" || name == "version") {
    std::printf("voucherd %s\n", k_voucherd_version);
    return k_exit_ok;
  }
  auto it = commands().find(name);
  if (it == commands().end()) {
    std::fprintf(stderr, "voucherd: unknown command '%s'\n\n%s", name.c_str(), k_usage);
    return k_exit_usage;
  }
  try {
    return it->second(cli::args(argv + 2, argv + argc));
  } catch (const std::exception& e) {
    const auto kind = classify(e);
    cli::say(fmt::format("{} error: {}", to_string(kind), e.what()));
    if (kind == failure_kind::config)
      if (const std::string hint = config_hint(sqlstate_of(e), e.what()); !hint.empty()) cli::say(hint);
    return exit_code_for(kind);
  }
}
