#pragma once
// The push source behind POST /v1/claims: each request body is one message,
// answered (through the http_server's done callback) once its claim
// committed. Bodies that are not a message at all are answered at once as
// malformed, messages with bad fields at once as rejected; neither touches
// the database (a rejection still counts in the claim metrics). A claim that
// cannot run now (the database is away, a lock or statement timed out) is
// answered as a transient failure (503) rather than retried: the HTTP client
// retries. A claim that failed because a concurrent duplicate of the same
// user committed first is claimed again and answered already_claimed.
// A message's id is the client's (source "http", or "http:<message_source>"
// when the message names its client's namespace): the same id again for
// another user or campaign is answered rejected (422) and dead-lettered.
#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>

#include "claim/claim_outcome.hpp"
#include "claim/metrics.hpp"
#include "source/message_buffer.hpp"
#include "source/message_source.hpp"

namespace voucherd {

class http_source final : public message_source {
 public:
  http_source(std::string default_campaign, metrics& registry)
      : default_campaign_{std::move(default_campaign)}, metrics_{registry} {}

  const char* name() const override { return "http"; }
  void start(asio::io_context& io) override;
  // The http_server's claim_handler (called on the io_context thread).
  void submit(std::string body, std::function<void(claim_reply)> done);

  asio::awaitable<std::vector<delivery>> take(pg_connection& conn, std::size_t max) override;
  asio::awaitable<void> wait_for_work(pg_connection& conn) override;
  asio::awaitable<void> record(pg_connection&, std::vector<delivery>&, const std::vector<claim_outcome>&) override;
  void committed(std::vector<delivery>& batch, const std::vector<claim_outcome>& outcomes) override;
  void abandoned(std::vector<delivery> batch, bool unavailable) override;
  void database_unavailable() override;

 private:
  std::string default_campaign_;
  metrics& metrics_;  // counts the rejections answered here, before any claimer
  std::unique_ptr<message_buffer> buffer_;
  std::uint64_t next_seq_ = 0;
  std::unordered_map<std::uint64_t, std::function<void(claim_reply)>> waiting_;
};

}  // namespace voucherd
