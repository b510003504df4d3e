#include "source/stdin_source.hpp"

#include <poll.h>
#include <unistd.h>

#include <boost/asio/post.hpp>

namespace voucherd {

stdin_source::stdin_source(int fd, std::FILE* out, std::size_t capacity)
    : fd_{fd}, out_{out}, capacity_{capacity} {}

stdin_source::~stdin_source() { close(); }

void stdin_source::start(asio::io_context& io) {
  io_ = &io;
  buffer_ = std::make_unique<message_buffer>(io);
  reader_ = std::thread{[this] { read_lines(); }};
}

void stdin_source::read_lines() {
  std::uint64_t seq = 0;
  delivery current;
  auto emit = [&] {
    if (!current.body.empty() && current.body.back() == '\r' && !current.oversized) current.body.pop_back();
    if (current.body.empty() && !current.oversized) return;  // blank lines are not messages
    current.seq = seq;
    current.id = std::to_string(seq + 1);  // the line's number among messages
    ++seq;
    while (buffer_->size_hint() >= capacity_ && !stop_.load()) usleep(1000);
    buffer_->push(std::move(current));
    current = delivery{};
  };
  char buf[65536];
  while (!stop_.load()) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = read(fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] == '\n') {
        emit();
        continue;
      }
      if (current.body.size() < k_max_message_bytes) current.body += buf[i];
      else current.oversized = true;
    }
  }
  if (stop_.load()) {
    reader_done_.store(true);
    return;
  }
  emit();
  reader_done_.store(true);
  asio::post(*io_, [this, seq] {
    eof_ = true;
    total_ = seq;
    buffer_->push_front({});  // wakes idle claimers so they see the end
  });
}

asio::awaitable<std::vector<delivery>> stdin_source::take(pg_connection&, std::size_t max) {
  co_return buffer_->pop(max);
}

asio::awaitable<void> stdin_source::wait_for_work(pg_connection&) {
  co_await buffer_->wait(k_idle_wait);
}

asio::awaitable<void> stdin_source::record(pg_connection&, std::vector<delivery>&,
                                           const std::vector<claim_outcome>&) {
  co_return;
}

void stdin_source::committed(std::vector<delivery>& batch, const std::vector<claim_outcome>& outcomes) {
  for (std::size_t i = 0; i < batch.size(); ++i) waiting_[batch[i].seq] = to_json_line(outcomes[i]);
  bool wrote = false;
  for (auto it = waiting_.begin(); it != waiting_.end() && it->first == next_print_; it = waiting_.erase(it)) {
    std::fwrite(it->second.data(), 1, it->second.size(), out_);
    std::fputc('\n', out_);
    ++next_print_;
    wrote = true;
  }
  if (wrote) std::fflush(out_);
}

void stdin_source::abandoned(std::vector<delivery> batch, bool) { buffer_->push_front(std::move(batch)); }

bool stdin_source::finished() const { return eof_ && next_print_ == total_ && buffer_->empty(); }

void stdin_source::close() {
  stop_.store(true);
  if (reader_.joinable()) reader_.join();
}

}  // namespace voucherd
