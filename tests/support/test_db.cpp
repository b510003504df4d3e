#include "support/test_db.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <random>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

#include "db/migrator.hpp"
#include "db/migration_file.hpp"
#include "db/session.hpp"

extern char** environ;

namespace voucherd::test {

std::string admin_url() {
  const char* url = std::getenv("VOUCHERD_TEST_ADMIN_URL");
  if (!url || !*url)
    throw std::runtime_error("VOUCHERD_TEST_ADMIN_URL is not set: run the tests through scripts/test");
  return url;
}

namespace {

std::string url_with_db(const std::string& admin, const std::string& db) {
  auto slash = admin.rfind('/');
  return admin.substr(0, slash + 1) + db;
}

bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v && std::string{v} == value;
}

std::string random_suffix() {
  static std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:012x}", rng() & 0xffffffffffffULL);
}

}  // namespace

bool through_pooler() { return env_is("VOUCHERD_TEST_THROUGH_POOLER", "1"); }

std::string pooler_admin_url() {
  const char* url = std::getenv("VOUCHERD_TEST_POOLER_URL");
  if (!url || !*url)
    throw std::runtime_error("VOUCHERD_TEST_POOLER_URL is not set: run the tests through scripts/test "
                             "(which starts a pgbouncer), or leave them out with ctest -LE pooler");
  return url;
}

std::string direct_server_url() {
  const auto admin = admin_url();
  return admin.substr(0, admin.rfind('/'));
}

test_database::test_database(bool migrate) {
  name_ = "vd_" + random_suffix();
  pqxx::connection admin{admin_url()};
  pqxx::nontransaction tx{admin};
  tx.exec("CREATE DATABASE " + tx.quote_name(name_));
  direct_url_ = url_with_db(admin_url(), name_);
  url_ = through_pooler() ? pooled_url() : direct_url_;
  if (migrate) {
    db_session session{direct_url_};
    apply_migrations(session.conn(), embedded_migrations());
  }
}

test_database::~test_database() {
  try {
    pqxx::connection admin{admin_url()};
    pqxx::nontransaction tx{admin};
    tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(name_) + " WITH (FORCE)");
  } catch (...) {
  }
}

std::string test_database::pooled_url() const { return url_with_db(pooler_admin_url(), name_); }

transaction_pooling test_database::pooling() const {
  if (!through_pooler()) return {};
  connection_settings s;
  s.url = url_;
  s.pooled = true;
  s.listen_url = direct_server_url();
  return transaction_pooling::of(s);
}

std::unique_ptr<pqxx::connection> test_database::connect() const {
  return std::make_unique<pqxx::connection>(direct_url_);
}

std::string test_database::scalar(const std::string& query) const {
  pqxx::connection c{direct_url_};
  pqxx::nontransaction tx{c};
  auto r = tx.exec(query);
  if (r.empty() || r[0][0].is_null()) return "";
  return r[0][0].as<std::string>();
}

std::int64_t test_database::count(const std::string& query) const { return std::stoll(scalar(query)); }

void test_database::make_campaign(const std::string& campaign, int codes) const {
  auto r = run_voucherd({"campaign", "create", campaign, "--database-url", url_});
  if (r.exit_code != 0) throw std::runtime_error("campaign create failed: " + r.err);
  std::string prefix;
  for (char c : campaign)
    if (std::isalnum(static_cast<unsigned char>(c)) && prefix.size() < 8)
      prefix += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::string file;
  for (int i = 1; i <= codes; ++i) file += fmt::format("{}{:06d}\n", prefix, i);
  r = run_voucherd({"import", "--campaign", campaign, "-", "--database-url", url_}, file);
  if (r.exit_code != 0) throw std::runtime_error("import failed: " + r.err + r.out);
}

const char* voucherd_bin() {
  const char* over = std::getenv("VOUCHERD_TEST_BIN");
  return over && *over ? over : VOUCHERD_BIN;
}

namespace {

std::vector<std::string> build_env(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    if (kv.rfind("DATABASE_URL=", 0) == 0) continue;
    env.push_back(kv);
  }
  auto pooled = through_pooler() ? std::map<std::string, std::string>{{"VOUCHERD_TRANSACTION_POOLER", "1"},
                                                                      {"VOUCHERD_LISTEN_URL", direct_server_url()}}
                                 : std::map<std::string, std::string>{};
  for (const auto& [k, v] : extra) pooled[k] = v;
  for (const auto& [k, v] : pooled) env.push_back(k + "=" + v);
  return env;
}

int spawn_with(const std::vector<std::string>& args, posix_spawn_file_actions_t* fa,
               const std::map<std::string, std::string>& env_extra) {
  std::vector<std::string> argv_s{voucherd_bin()};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  auto env_s = build_env(env_extra);
  std::vector<char*> envp;
  for (auto& s : env_s) envp.push_back(s.data());
  envp.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, voucherd_bin(), fa, nullptr, argv.data(), envp.data()) != 0)
    throw std::runtime_error("posix_spawn failed");
  return pid;
}

}  // namespace

int wait_exit(int pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

bool still_running(int pid) {
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0;
}

run_result run_voucherd(const std::vector<std::string>& args, const std::string& input,
                        const std::map<std::string, std::string>& env) {
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) || pipe2(out_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC))
    throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in_pipe[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  const int pid = spawn_with(args, &fa, env);
  posix_spawn_file_actions_destroy(&fa);
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);

  run_result result;
  std::size_t written = 0;
  int in_fd = in_pipe[1];
  if (input.empty()) { close(in_fd); in_fd = -1; }
  fcntl(out_pipe[0], F_SETFL, O_NONBLOCK);
  fcntl(err_pipe[0], F_SETFL, O_NONBLOCK);
  if (in_fd >= 0) fcntl(in_fd, F_SETFL, O_NONBLOCK);
  bool out_open = true, err_open = true;
  char buf[65536];
  while (out_open || err_open) {
    std::vector<pollfd> fds;
    if (out_open) fds.push_back({out_pipe[0], POLLIN, 0});
    if (err_open) fds.push_back({err_pipe[0], POLLIN, 0});
    if (in_fd >= 0) fds.push_back({in_fd, POLLOUT, 0});
    if (poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) break;
    for (const auto& p : fds) {
      if (!p.revents) continue;
      if (p.fd == in_fd) {
        const ssize_t n = write(in_fd, input.data() + written, input.size() - written);
        if (n > 0) written += static_cast<std::size_t>(n);
        if (n < 0 && errno != EAGAIN) written = input.size();
        if (written == input.size()) { close(in_fd); in_fd = -1; }
        continue;
      }
      const ssize_t n = read(p.fd, buf, sizeof buf);
      if (n > 0) (p.fd == out_pipe[0] ? result.out : result.err).append(buf, static_cast<std::size_t>(n));
      else if (n == 0 || errno != EAGAIN) (p.fd == out_pipe[0] ? out_open : err_open) = false;
    }
  }
  if (in_fd >= 0) close(in_fd);
  close(out_pipe[0]);
  close(err_pipe[0]);
  result.exit_code = wait_exit(pid);
  return result;
}

int spawn_voucherd(const std::vector<std::string>& args, const child_io& io,
                   const std::map<std::string, std::string>& env) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (io.stdin_fd >= 0) posix_spawn_file_actions_adddup2(&fa, io.stdin_fd, 0);
  else posix_spawn_file_actions_addopen(&fa, 0, io.stdin_path.empty() ? "/dev/null" : io.stdin_path.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, io.stdout_path.empty() ? "/dev/null" : io.stdout_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, io.stderr_path.empty() ? "/dev/null" : io.stderr_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  try {
    const int pid = spawn_with(args, &fa, env);
    posix_spawn_file_actions_destroy(&fa);
    return pid;
  } catch (...) {
    posix_spawn_file_actions_destroy(&fa);
    throw;
  }
}

int spawn_voucherd(const std::vector<std::string>& args, const std::string& stdout_path,
                   const std::string& stderr_path, const std::map<std::string, std::string>& env) {
  return spawn_voucherd(args, child_io{{}, -1, stdout_path, stderr_path}, env);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

std::vector<std::string> audit_campaign(pqxx::connection& conn, const std::string& campaign) {
  std::vector<std::string> problems;
  pqxx::nontransaction tx{conn};
  for (const auto& r : tx.exec_params(
           "SELECT v.user_id, count(*) FROM voucher_item v JOIN campaign c ON c.id = v.campaign_id "
           "WHERE c.name = $1 AND v.user_id IS NOT NULL GROUP BY v.user_id HAVING count(*) > 1",
           campaign))
    problems.push_back(fmt::format("I2: user {} owns {} vouchers", r[0].c_str(), r[1].c_str()));
  for (const auto& r : tx.exec_params(
           "SELECT v.id, v.user_id, (SELECT count(*) FROM notification_outbox n "
           "  WHERE n.voucher_id = v.id AND n.user_id = v.user_id) AS notes "
           "FROM voucher_item v JOIN campaign c ON c.id = v.campaign_id "
           "WHERE c.name = $1 AND v.user_id IS NOT NULL",
           campaign))
    if (r[2].as<int>() != 1)
      problems.push_back(fmt::format("I3: owner {} of voucher {} has {} notifications", r[1].c_str(),
                                     r[0].c_str(), r[2].c_str()));
  for (const auto& r : tx.exec_params(
           "SELECT n.user_id, n.voucher_id FROM notification_outbox n JOIN campaign c ON c.id = n.campaign_id "
           "JOIN voucher_item v ON v.id = n.voucher_id "
           "WHERE c.name = $1 AND v.user_id IS DISTINCT FROM n.user_id",
           campaign))
    problems.push_back(fmt::format("I1/I3: user {} was told voucher {} but does not own it", r[0].c_str(),
                                   r[1].c_str()));
  return problems;
}

}  // namespace voucherd::test

namespace voucherd::test {

std::string describe(const std::vector<std::string>& problems) {
  std::string out = fmt::format("{} problem(s)", problems.size());
  for (std::size_t i = 0; i < problems.size() && i < 10; ++i) out += "\n  " + problems[i];
  return out;
}

}  // namespace voucherd::test
