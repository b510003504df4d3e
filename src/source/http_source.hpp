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
//
// Group commit: claimers take every waiting request, up to the batch, into
// one transaction without waiting for more, so concurrent clients share a
// commit; a lone request is claimed at once.
//
// Back-pressure (http_source_limits): a request arriving while queue_max
// requests already wait unclaimed, or still unclaimed at its deadline, is
// answered 503 (transient, reply.overload says which) and taken out of the
// queue in the same step, on the io_context thread that alone takes from it:
// a request answered 503 is never claimed. Once a claimer took a request its
// deadline no longer applies (it is answered by its claim); a request given
// back after a rolled-back try waits again under its first deadline.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>

#include "claim/claim_outcome.hpp"
#include "claim/metrics.hpp"
#include "source/http_source_limits.hpp"
#include "source/message_buffer.hpp"
#include "source/message_source.hpp"

namespace voucherd {

class http_source final : public message_source {
 public:
  http_source(std::string default_campaign, metrics& registry, http_source_limits limits = {})
      : default_campaign_{std::move(default_campaign)}, metrics_{registry}, limits_{limits} {}

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
  // SIGTERM: requests not yet taken by a claimer, and any that arrive after,
  // are answered 503 (transient): the claimers take nothing more.
  void stop_intake() override;
  std::size_t messages_per_transaction(std::size_t) const override { return limits_.batch; }
  bool records_in_database() const override { return false; }

 private:
  using clock_type = std::chrono::steady_clock;
  struct waiter {
    std::function<void(claim_reply)> done;
    clock_type::time_point arrived;
    clock_type::time_point deadline;
    // A try of its claim failed on the database; if it lost the connection
    // before the COMMIT's answer, the claim may have gone through, so no
    // answer may say nothing was claimed.
    bool outcome_unknown = false;
  };
  static claim_reply shutting_down_reply();
  static claim_reply outcome_unknown_reply();
  static claim_reply unavailable_reply();
  // Takes the request out of waiting_ and gives it `reply` (nothing when it
  // was answered already); a 503 becomes outcome_unknown_reply() for a
  // request whose earlier try may have committed.
  void answer(std::uint64_t seq, claim_reply reply);
  void answer_all(const std::vector<delivery>& batch, const claim_reply& reply);
  // Answers 503 (overload) for a request that is in no queue any more.
  void turn_away(std::uint64_t seq, http_overload why);
  // Takes out and answers every waiting request past its deadline.
  void expire_waiting();
  asio::awaitable<void> sweep_deadlines(std::weak_ptr<bool> alive);

  std::string default_campaign_;
  metrics& metrics_;  // counts the rejections answered here, before any claimer
  std::unique_ptr<message_buffer> buffer_;
  std::uint64_t next_seq_ = 0;
  http_source_limits limits_;
  std::unordered_map<std::uint64_t, waiter> waiting_;  // taken or not, until answered
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // the sweeper stops with this source
  bool stopping_ = false;  // stop_intake() ran (on the io_context thread, as submit)
};

}  // namespace voucherd
