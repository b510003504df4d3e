#include "source/message_buffer.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "source/message_source.hpp"

namespace voucherd {

using namespace boost::asio::experimental::awaitable_operators;

asio::awaitable<void> message_source::on_connect(pg_connection&) { co_return; }

message_buffer::message_buffer(asio::io_context& io)
    : io_{io}, signal_{io, std::chrono::steady_clock::time_point::max()} {}

void message_buffer::push(delivery d) {
  count_.fetch_add(1);
  asio::post(io_, [this, d = std::move(d)]() mutable {
    items_.push_back(std::move(d));
    signal_.cancel();
  });
}

void message_buffer::push_front(std::vector<delivery> batch) {
  count_.fetch_add(batch.size());
  for (auto it = batch.rbegin(); it != batch.rend(); ++it) items_.push_front(std::move(*it));
  signal_.cancel();
}

std::vector<delivery> message_buffer::pop(std::size_t max) {
  std::vector<delivery> out;
  while (!items_.empty() && out.size() < max) {
    out.push_back(std::move(items_.front()));
    items_.pop_front();
  }
  count_.fetch_sub(out.size());
  return out;
}

std::vector<delivery> message_buffer::remove_if(const std::function<bool(const delivery&)>& expired) {
  std::vector<delivery> out;
  std::deque<delivery> kept;
  for (auto& d : items_) {
    if (expired(d))
      out.push_back(std::move(d));
    else
      kept.push_back(std::move(d));
  }
  items_.swap(kept);
  count_.fetch_sub(out.size());
  return out;
}

asio::awaitable<void> message_buffer::wait(std::chrono::milliseconds timeout) {
  if (!items_.empty()) co_return;
  asio::steady_timer timeout_timer{io_, timeout};
  co_await (signal_.async_wait(asio::as_tuple(asio::use_awaitable)) ||
            timeout_timer.async_wait(asio::as_tuple(asio::use_awaitable)));
}

}  // namespace voucherd
