#pragma once
// The stdin source: one JSON message per line in, one outcome JSON line out
// per message on stdout, in input order, each printed only after its claim
// committed. At end of input the worker exits once every line is answered.
//
// A reader thread reads the lines (keeping at most k_max_message_bytes of a
// line; a longer one is rejected) into a message_buffer, pausing while the
// buffer holds more than its capacity. Concurrent claimers finish out of
// order; outcomes wait in a reorder map until every earlier line is printed.
// Nothing is recorded in the database besides the claims themselves (with
// their outcomes under source "stdin[:<message_source>]" when a line carries
// a message_id); a rerun of the same input answers already_claimed with the
// same codes.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <thread>

#include "source/message_buffer.hpp"
#include "source/message_source.hpp"

namespace voucherd {

class stdin_source final : public message_source {
 public:
  // fd: where lines come from (0); out: where outcome lines go (stdout).
  stdin_source(int fd, std::FILE* out, std::size_t capacity);
  ~stdin_source() override;

  const char* name() const override { return "stdin"; }
  void start(asio::io_context& io) override;
  asio::awaitable<std::vector<delivery>> take(pg_connection& conn, std::size_t max) override;
  asio::awaitable<void> wait_for_work(pg_connection& conn) override;
  asio::awaitable<void> record(pg_connection&, std::vector<delivery>&, const std::vector<claim_outcome>&) override;
  void committed(std::vector<delivery>& batch, const std::vector<claim_outcome>& outcomes) override;
  bool records_in_database() const override { return false; }
  void abandoned(std::vector<delivery> batch, bool unavailable) override;
  bool finished() const override;
  void stop_intake() override { stop_.store(true); }
  bool drained() const override { return reader_done_.load() && buffer_->size_hint() == 0; }
  void close() override;

 private:
  void read_lines();

  int fd_;
  std::FILE* out_;
  std::size_t capacity_;
  std::unique_ptr<message_buffer> buffer_;
  asio::io_context* io_ = nullptr;
  std::thread reader_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> reader_done_{false};
  bool eof_ = false;             // io thread: the reader saw the end of input
  std::uint64_t total_ = 0;      // io thread: lines read, valid once eof_
  std::uint64_t next_print_ = 0;
  std::map<std::uint64_t, std::string> waiting_;  // outcome lines not yet in order
};

}  // namespace voucherd
