// `voucherd worker` and `voucherd enqueue` options: every option is in
// --help, bad values are refused once, at start-up, with a message naming
// the option, and usage errors exit 64 without touching the database.
#include <doctest/doctest.h>

#include "support/test_ca.hpp"
#include "worker/worker_config.hpp"
#include "worker_fixture.hpp"

using namespace voucherd::test;

TEST_CASE("worker --help documents every option") {
  const auto r = run_voucherd({"worker", "--help"});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  for (const char* option : {"--source", "--campaign", "--concurrency", "--threads", "--batch", "--strategy", "--http", "--notify",
                             "--redis-url", "--stream", "--group", "--consumer", "--dead-letter-stream",
                             "--claim-idle-ms", "--max-deliveries", "--shutdown-grace-ms", "--database-url",
                             "--http-token-file", "--http-tls-cert", "--http-tls-key", "--webhook-ca-file",
                             "--http-queue-max", "--http-deadline-ms", "--http-claimers", "--pg-general-path"})
    CHECK_MESSAGE(r.out.find(option) != std::string::npos, option << " is documented in --help");
}

TEST_CASE("bad worker options are refused at start-up with a message naming the option") {
  // An unreachable database: a refused option must be reported before any connection is tried.
  const std::string url = fmt::format("postgresql://postgres@127.0.0.1:{}/none", voucherd::free_local_port());
  struct bad_call {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<bad_call> calls{
      {{"--source", "kafka"}, "--source must be stdin, pg or redis"},
      {{"--concurrency", "0"}, "--concurrency must be 1..256"},
      {{"--concurrency", "100000"}, "--concurrency must be 1..256"},
      {{"--batch", "0"}, "--batch must be 1..1000"},
      {{"--batch", "1001"}, "--batch must be 1..1000"},
      {{"--campaign", "Not A Slug"}, "--campaign: campaign name"},
      {{"--strategy", "redlock"}, "voucherd bench --strategy redlock"},
      {{"--source", "redis", "--redis-url", "http://x"}, "--redis-url must start with redis://"},
      {{"--source", "redis", "--max-deliveries", "0"}, "--max-deliveries must be at least 1"},
      {{"--source", "redis", "--claim-idle-ms", "0"}, "--claim-idle-ms must be at least 1"},
      {{"--concurrency", "many"}, "concurrency"},
      {{"--threads", "-1"}, "--threads must be 0 (one per CPU) .. 64"},
      {{"--threads", "65"}, "--threads must be 0 (one per CPU) .. 64"},
      {{"--source", "redis", "--threads", "2"}, "only --source pg runs its claimers on several threads"},
      {{"--http", "127.0.0.1:0", "--concurrency", "2", "--http-claimers", "3"}, "--http-claimers must be 1..2"},
      {{"--http", "127.0.0.1:0", "--http-claimers", "-1"}, "--http-claimers must be 1..4"},
      {{"--http", "127.0.0.1:0", "--http-claimers", "0"}, "--http-claimers must be 1..4 (--concurrency), got 0"},
  };
  for (const auto& call : calls) {
    std::vector<std::string> args{"worker", "--database-url", url};
    args.insert(args.end(), call.args.begin(), call.args.end());
    const auto r = run_voucherd(args);
    CAPTURE(call.says);
    CHECK_MESSAGE(r.exit_code == 64, "usage error exit 64, got " << r.exit_code << ": " << r.err);
    CHECK_MESSAGE(r.err.find(call.says) != std::string::npos, "the message says '" << call.says << "': " << r.err);
  }
}

TEST_CASE("POST /v1/claims gets two claimers under group commit, every claimer at --batch 1, or --http-claimers") {
  voucherd::worker_config c;
  c.concurrency = 8;
  CHECK(c.http_claimers() == voucherd::http_source_limits::k_default_group_claimers);
  c.http.batch = 1;
  CHECK_MESSAGE(c.http_claimers() == 8, "no group commit: one request a transaction, every claimer");
  c.http.batch = 100;
  c.http.claimers = 5;
  CHECK(c.http_claimers() == 5);
  c.http.claimers.reset();
  c.concurrency = 1;
  CHECK_MESSAGE(c.http_claimers() == 1, "never more than --concurrency");
}

TEST_CASE("environment fills what flags leave open, and is validated the same way") {
  const std::string url = fmt::format("postgresql://postgres@127.0.0.1:{}/none", voucherd::free_local_port());
  const auto r = run_voucherd({"worker", "--database-url", url}, {}, {{"VOUCHERD_CONCURRENCY", "0"}});
  CHECK_MESSAGE(r.exit_code == 64, r.err);
  CHECK_MESSAGE(r.err.find("--concurrency must be 1..256, got 0") != std::string::npos, r.err);
  const auto b = run_voucherd({"worker", "--database-url", url}, {}, {{"VOUCHERD_BATCH", "ten"}});
  CHECK_MESSAGE(b.exit_code == 64, b.err);
  CHECK_MESSAGE(b.err.find("VOUCHERD_BATCH must be a number") != std::string::npos, b.err);
  const auto t = run_voucherd({"worker", "--database-url", url, "--source", "stdin"}, {}, {{"VOUCHERD_THREADS", "3"}});
  CHECK_MESSAGE(t.exit_code == 64, t.err);
  CHECK_MESSAGE(t.err.find("--threads 3: only --source pg") != std::string::npos, t.err);
  const auto c = run_voucherd({"worker", "--database-url", url, "--http", "127.0.0.1:0"}, {}, {{"VOUCHERD_HTTP_CLAIMERS", "0"}});
  CHECK_MESSAGE(c.exit_code == 64, c.err);
  CHECK_MESSAGE(c.err.find("--http-claimers must be 1..4 (--concurrency), got 0") != std::string::npos, c.err);
  // A number past the type it is kept in is refused as given; 4294967297
  // once wrapped to a worker of one claimer, and a long overflow read as
  // LONG_MAX.
  const std::vector<std::pair<std::string, std::string>> too_big{
      {"VOUCHERD_CONCURRENCY", "4294967297"},
      {"VOUCHERD_THREADS", "4294967296"},
      {"VOUCHERD_HTTP_CLAIMERS", "4294967297"},
      {"VOUCHERD_BATCH", "99999999999999999999"},
      {"VOUCHERD_LOCK_TIMEOUT_MS", "99999999999999999999"},
  };
  for (const auto& [name, value] : too_big) {
    const auto o = run_voucherd({"worker", "--database-url", url, "--http", "127.0.0.1:0"}, {}, {{name, value}});
    CHECK_MESSAGE(o.exit_code == 64, name, ": ", o.err);
    CHECK_MESSAGE(o.err.find(fmt::format("{} is out of range, got '{}'", name, value)) != std::string::npos, o.err);
  }
}

TEST_CASE("enqueue refuses an unknown source and a missing file") {
  const auto r = run_voucherd({"enqueue", "--source", "kafka", "/dev/null"});
  CHECK_MESSAGE(r.exit_code == 64, r.err);
  CHECK_MESSAGE(r.err.find("--source must be pg or redis") != std::string::npos, r.err);
  const auto m = run_voucherd({"enqueue", "--source", "pg", "/no/such/file"});
  CHECK_MESSAGE(m.exit_code == 64, m.err);
  CHECK_MESSAGE(m.err.find("cannot open /no/such/file") != std::string::npos, m.err);
}

TEST_CASE("--http beyond loopback needs a bearer token, and every HTTP and webhook file is checked before the worker "
          "starts") {
  const std::string url = fmt::format("postgresql://postgres@127.0.0.1:{}/none", voucherd::free_local_port());
  const test_ca ca;
  const auto short_token = temp_path("short-token");
  std::ofstream{short_token} << "too-short\n";
  struct bad_call {
    std::vector<std::string> args;
    int exit_code;
    std::string says;
  };
  const std::vector<bad_call> calls{
      {{"--http", "0.0.0.0:8080"}, 64, "--http-token-file"},
      {{"--http", "[::]:8080"}, 64, "--http-token-file"},
      {{"--http", "0.0.0.0:8080", "--http-token-file", "/no/such/token"}, 78, "/no/such/token"},
      {{"--http", "0.0.0.0:8080", "--http-token-file", short_token}, 78, "at least 16 characters"},
      {{"--http-token-file", short_token}, 64, "a bearer token needs --http"},
      {{"--http", "127.0.0.1:0", "--http-tls-cert", ca.server_cert()}, 64, "--http-tls-key"},
      {{"--http", "127.0.0.1:0", "--http-tls-key", ca.server_key()}, 64, "--http-tls-cert"},
      {{"--http", "127.0.0.1:0", "--http-tls-cert", "/no/such/cert.pem", "--http-tls-key", ca.server_key()}, 78,
       "/no/such/cert.pem"},
      {{"--http", "127.0.0.1:0", "--http-tls-cert", ca.server_cert(), "--http-tls-key", ca.dir() + "/ca.key"}, 78,
       ca.dir() + "/ca.key"},
      {{"--http", "127.0.0.1:0", "--http-tls-cert", short_token, "--http-tls-key", ca.server_key()}, 78, short_token},
      {{"--http-tls-cert", ca.server_cert(), "--http-tls-key", ca.server_key()}, 64, "need --http"},
      {{"--notify", "webhook:https://localhost:9/hook", "--webhook-ca-file", "/no/such/ca.pem"}, 78, "/no/such/ca.pem"},
      {{"--notify", "smtp"}, 64, "--notify 'smtp'"},
      {{"--http", "127.0.0.1:0", "--http-queue-max", "0"}, 64, "--http-queue-max must be at least 1"},
      {{"--http", "127.0.0.1:0", "--http-deadline-ms", "0"}, 64, "--http-deadline-ms must be at least 1"},
  };
  for (const auto& call : calls) {
    std::vector<std::string> args{"worker", "--database-url", url};
    args.insert(args.end(), call.args.begin(), call.args.end());
    const auto r = run_voucherd(args);
    CAPTURE(call.says);
    CHECK_MESSAGE(r.exit_code == call.exit_code, "exit " << call.exit_code << ", got " << r.exit_code << ": " << r.err);
    CHECK_MESSAGE(r.err.find(call.says) != std::string::npos, "the message says '" << call.says << "': " << r.err);
    CHECK_MESSAGE(r.err.find("worker starting") == std::string::npos, "refused before anything starts: " << r.err);
  }
  // The token itself is never echoed, not even when it is refused.
  const auto refused = run_voucherd({"worker", "--database-url", url, "--http", "0.0.0.0:8080", "--http-token-file", short_token});
  CHECK_MESSAGE(refused.err.find("too-short") == std::string::npos, refused.err);
  const auto from_env = run_voucherd({"worker", "--database-url", url, "--http", "0.0.0.0:8080"}, {},
                                     {{"VOUCHERD_HTTP_TOKEN", "bad token with spaces"}});
  CHECK_MESSAGE(from_env.exit_code == 78, from_env.err);
  CHECK_MESSAGE(from_env.err.find("VOUCHERD_HTTP_TOKEN") != std::string::npos, from_env.err);
  CHECK_MESSAGE(from_env.err.find("with spaces") == std::string::npos, from_env.err);
  std::filesystem::remove(short_token);
}
