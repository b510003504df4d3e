#include "redis/redis_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "common/failure.hpp"

extern char** environ;

namespace voucherd {

int free_local_port() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw voucherd_error{failure_kind::internal, "cannot open a socket to find a free port"};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    throw voucherd_error{failure_kind::internal, "cannot find a free port"};
  }
  close(fd);
  return ntohs(addr.sin_port);
}

redis_server::redis_server(persistence mode) {
  if (mode == persistence::append_only) {
    char dir[] = "/tmp/voucherd-redis.XXXXXX";
    if (!mkdtemp(dir)) throw voucherd_error{failure_kind::internal, "cannot create a redis data directory"};
    dir_ = dir;
  }
  start(free_local_port());
}

redis_server::~redis_server() {
  stop();
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

void redis_server::restart() {
  stop();
  start(endpoint_.port);
}

void redis_server::start(int port) {
  endpoint_ = {"127.0.0.1", port};
  std::vector<std::string> argv{"redis-server", "--port", std::to_string(port), "--bind", "127.0.0.1", "--save", "",
                                "--daemonize", "no", "--loglevel", "warning"};
  if (dir_.empty()) argv.insert(argv.end(), {"--appendonly", "no"});
  else argv.insert(argv.end(), {"--appendonly", "yes", "--appendfsync", "everysec", "--dir", dir_});
  std::vector<char*> raw;
  for (auto& a : argv) raw.push_back(a.data());
  raw.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  const int rc = posix_spawnp(&pid_, "redis-server", &actions, nullptr, raw.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    pid_ = -1;
    throw voucherd_error{failure_kind::internal,
                         fmt::format("cannot start redis-server: {}", std::strerror(rc))};
  }
  // Readiness is the server answering PING; poll it, but give up if the
  // process died (the port was taken in between, say).
  redis_node probe{endpoint_, std::chrono::milliseconds{200}};
  const auto deadline = std::chrono::steady_clock::now() + k_redis_start_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = probe.command({"PING"});
    if (r && r->type == REDIS_REPLY_STATUS) return;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw voucherd_error{failure_kind::internal,
                           fmt::format("redis-server on port {} exited at start", endpoint_.port)};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
  stop();
  throw voucherd_error{failure_kind::internal,
                       fmt::format("redis-server on port {} did not answer in time", endpoint_.port)};
}

void redis_server::kill_now() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void redis_server::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::vector<std::unique_ptr<redis_server>> start_redis_servers(int n) {
  std::vector<std::unique_ptr<redis_server>> servers;
  for (int i = 0; i < n; ++i) servers.push_back(std::make_unique<redis_server>());
  return servers;
}

std::vector<redis_endpoint> endpoints_of(const std::vector<std::unique_ptr<redis_server>>& servers) {
  std::vector<redis_endpoint> out;
  for (const auto& s : servers) out.push_back(s->endpoint());
  return out;
}

}  // namespace voucherd
