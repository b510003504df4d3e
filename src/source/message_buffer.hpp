#pragma once
// Deliveries waiting in memory for a claimer: the hand-over from a source's
// reader thread (stdin, redis) or the HTTP server to the io_context thread.
// push() may be called from any thread; everything else runs on the
// io_context thread.
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "source/message.hpp"

namespace voucherd {

namespace asio = boost::asio;

class message_buffer {
 public:
  explicit message_buffer(asio::io_context& io);

  void push(delivery d);                         // any thread
  void push_front(std::vector<delivery> batch);  // a batch given back, keeps its order
  std::vector<delivery> pop(std::size_t max);
  // Takes out every waiting delivery `expired` says yes to, keeping the
  // others in order (the HTTP source's per-request deadline).
  std::vector<delivery> remove_if(const std::function<bool(const delivery&)>& expired);
  bool empty() const { return items_.empty(); }
  // Waits until something is pushed or the timeout passes.
  asio::awaitable<void> wait(std::chrono::milliseconds timeout);
  // Messages pushed and not yet popped, readable from any thread (back-pressure).
  std::size_t size_hint() const { return count_.load(); }

 private:
  asio::io_context& io_;
  std::deque<delivery> items_;
  asio::steady_timer signal_;
  std::atomic<std::size_t> count_{0};
};

}  // namespace voucherd
