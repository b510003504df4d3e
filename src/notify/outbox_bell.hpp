#pragma once
// The outbox's door bell: a worker rings it after every commit that wrote
// notifications, and it wakes the dispatchers.
//
//  - The worker's own dispatcher (--notify) is woken at once, in process
//    (outbox_dispatcher::wake): no round trip, no database lock.
//  - Dispatchers elsewhere (`voucherd notify`, other workers) LISTEN on
//    voucherd_outbox; the bell sends one NOTIFY on a connection of its own,
//    in a transaction of its own, at most once per `interval` however many
//    claims commit meanwhile. Why not a NOTIFY inside each claim
//    transaction (or a trigger): every transaction that notified takes
//    Postgres's one global notify lock at commit, so all committing claimers
//    would queue on it one after the other. A wake-up that comes up to
//    `interval` late costs nothing comparable.
//
// ring() never blocks and never fails: a claimer calls it right after its
// commit. The NOTIFY is sent from a thread of its own; if it cannot be sent
// (the database is away) it is logged and dropped, and the listening
// dispatchers still find the rows on their next poll (listen_poll_interval).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "db/connection_settings.hpp"

namespace voucherd {

class outbox_bell {
 public:
  static constexpr std::chrono::milliseconds k_default_interval{100};

  // conninfo: where to send the NOTIFY (through a transaction pooler is
  // fine); deadlines bound every wait on it (db/pg_notifier.hpp).
  // local_wake: the in-process dispatcher's wake(), or empty.
  outbox_bell(std::string conninfo, pg_deadlines deadlines, std::function<void()> local_wake,
              std::chrono::milliseconds interval = k_default_interval);
  ~outbox_bell();  // stop()s
  outbox_bell(const outbox_bell&) = delete;
  outbox_bell& operator=(const outbox_bell&) = delete;

  void start();
  // Sends a NOTIFY still owed, then stops the thread. Idempotent.
  void stop();
  // After a commit that wrote notifications. Thread-safe; takes a mutex only
  // when no ring is pending yet (at most about once per interval).
  void ring() noexcept;

 private:
  void run();

  std::string conninfo_;
  pg_deadlines deadlines_;
  std::function<void()> local_wake_;
  std::chrono::milliseconds interval_;
  std::atomic<bool> rung_{false};
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::condition_variable cv_;
  std::thread thread_;
};

}  // namespace voucherd
