#pragma once
// A wake-up one thread can send another that sleeps in poll(2) (on it alone,
// or beside a socket: db/pg_listener). An eventfd: signal() is one write,
// never blocks, and any number of signals before the sleeper looks count as
// one. Linux only, like the rest of the worker.
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <system_error>

namespace voucherd {

class wake_event {
 public:
  wake_event() : fd_{::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)} {
    if (fd_ < 0) throw std::system_error{errno, std::generic_category(), "eventfd"};
  }
  ~wake_event() { ::close(fd_); }
  wake_event(const wake_event&) = delete;
  wake_event& operator=(const wake_event&) = delete;

  // Thread-safe, async-signal-safe.
  void signal() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(fd_, &one, sizeof one);
  }
  // Clears pending signals; whether there were any.
  bool consume() noexcept {
    std::uint64_t count = 0;
    return ::read(fd_, &count, sizeof count) == static_cast<ssize_t>(sizeof count) && count > 0;
  }
  // Readable (POLLIN) while signalled.
  int fd() const noexcept { return fd_; }

 private:
  int fd_;
};

}  // namespace voucherd
