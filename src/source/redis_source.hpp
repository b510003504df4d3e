#pragma once
// The Redis Streams source: a stream (--stream) read through a consumer group
// (--group) as consumer --consumer.
//
// A reader thread (hiredis is blocking; the thread does all Redis I/O, so the
// claimers never wait on Redis) does, in a loop:
//  - at start, re-reads this consumer's own pending entries (a restart under
//    the same name), then XREADGROUP ... > with a short BLOCK while the
//    in-memory buffer has room;
//  - every claim_idle/2, while the buffer has room, XAUTOCLAIMs entries that
//    have been pending on any consumer for claim_idle (their consumer died),
//    except the ones this process still holds. An entry handed out more than
//    max_deliveries times is not claimed again but dead-lettered;
//  - acknowledges committed entries: XACK; a rejected one by a script that
//    acks it and, only if that removed it from the pending list, XADDs it to
//    the dead-letter stream, so the stream gets exactly one copy whichever
//    consumer acks it and however often a lost reply is retried.
// The claim records each entry's outcome in message_outcome under the source
// "redis:<stream>" and its entry id (entry ids of two streams collide: they
// are timestamps), in the claim transaction (claim_one's message id;
// rejected ones through redis_record_rejected, which also writes dead_letter). XACK comes only after
// that commit. The commit-then-ack window: a worker that dies between the two
// leaves the entry pending; it is taken over and claimed again, and the claim
// answers already_claimed with the same code while message_outcome keeps the
// first outcome.
// A lost Redis connection is reopened with capped exponential backoff and
// jitter; unacknowledged ids are kept and acknowledged after it is back. A
// group lost with a Redis restart is created again.
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "source/message_buffer.hpp"
#include "source/message_source.hpp"
#include "source/redis_source_config.hpp"

namespace voucherd {

class redis_node;

class redis_source final : public message_source {
 public:
  redis_source(redis_source_config config, std::size_t capacity);
  ~redis_source() override;

  const char* name() const override { return "redis"; }
  void start(asio::io_context& io) override;
  asio::awaitable<std::vector<delivery>> take(pg_connection& conn, std::size_t max) override;
  asio::awaitable<void> wait_for_work(pg_connection& conn) override;
  asio::awaitable<void> record(pg_connection& conn, std::vector<delivery>& batch,
                               const std::vector<claim_outcome>& outcomes) override;
  void committed(std::vector<delivery>& batch, const std::vector<claim_outcome>& outcomes) override;
  void abandoned(std::vector<delivery> batch, bool unavailable) override;
  void key_outcome(const delivery& d, claim_request& request) const override {
    request.source = outcome_source_;
    request.message_id = d.id;
  }
  void stop_intake() override { stop_reading_.store(true); }
  bool drained() const override { return reader_idle_.load() && buffer_->size_hint() == 0; }
  void close() override;

 private:
  struct ack {
    std::string id;
    bool rejected = false;  // copied to the dead-letter stream by whoever acks it
    std::string reason;
    std::string body;
  };

  void run();
  bool ensure_group(redis_node& node);
  bool read_entries(redis_node& node, const std::vector<std::string>& argv);
  bool autoclaim(redis_node& node);
  bool flush_acks(redis_node& node);
  void hand_over(delivery d);

  redis_source_config config_;
  std::string outcome_source_;  // "redis:<stream>": message_outcome.source of its entries
  std::size_t capacity_;
  std::unique_ptr<message_buffer> buffer_;
  std::thread reader_;
  std::atomic<bool> stop_reading_{false};
  std::atomic<bool> closing_{false};
  std::atomic<bool> reader_idle_{false};  // the reader saw stop_intake and reads no more
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<ack> acks_;                    // guarded by mutex_
  std::unordered_set<std::string> holding_;  // ids read and not yet acked; guarded by mutex_
};

}  // namespace voucherd
