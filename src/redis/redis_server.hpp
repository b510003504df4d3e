#pragma once
// A throwaway redis-server process on a free loopback port, for the race lab
// and the Redlock tests: no persistence unless asked for, stopped (SIGTERM,
// then reaped) when the object goes away. Only ever signals the process it
// started itself.
#include <sys/types.h>

#include <chrono>
#include <memory>
#include <vector>

#include "redis/redis_node.hpp"

namespace voucherd {

inline constexpr std::chrono::seconds k_redis_start_timeout{10};

class redis_server {
 public:
  enum class persistence { none, append_only };

  // Starts `redis-server` (found on PATH) and returns once it answers PING.
  // Throws voucherd_error(internal) if it cannot be started in time.
  // append_only: an append-only file (fsynced every second, and on a clean
  // shutdown) in a private directory that restart() reuses, so the data
  // outlives a stop() + restart() (a queue's Redis); the directory is removed
  // with the object.
  explicit redis_server(persistence mode = persistence::none);
  ~redis_server();
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  const redis_endpoint& endpoint() const { return endpoint_; }
  bool running() const { return pid_ > 0; }

  // Kills it hard (SIGKILL) and reaps it: a node that is simply gone.
  void kill_now();
  // SIGTERM and reap; a no-op when already stopped.
  void stop();
  // Starts a stopped or killed server again on the same port (empty without
  // persistence), as a node that comes back after a crash.
  void restart();

 private:
  void start(int port);

  redis_endpoint endpoint_;
  pid_t pid_ = -1;
  std::string dir_;  // the append-only file's directory; empty without persistence
};

// A free TCP port on 127.0.0.1 (bind to port 0, read it back, close).
int free_local_port();

// n throwaway servers, e.g. the 3 or 5 independent nodes of a Redlock.
std::vector<std::unique_ptr<redis_server>> start_redis_servers(int n);
std::vector<redis_endpoint> endpoints_of(const std::vector<std::unique_ptr<redis_server>>& servers);

}  // namespace voucherd
