#include "source/http_source.hpp"

#include <algorithm>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

namespace voucherd {

void http_source::start(asio::io_context& io) {
  buffer_ = std::make_unique<message_buffer>(io);
  asio::co_spawn(io, sweep_deadlines(alive_), asio::detached);
}

void http_source::submit(std::string body, std::function<void(claim_reply)> done) {
  if (stopping_) {
    done(shutting_down_reply());
    return;
  }
  auto parsed = parse_message(body, body.size() > k_max_message_bytes, default_campaign_, name());
  if (auto* rejected = std::get_if<claim_outcome>(&parsed)) {
    claim_reply reply;
    if (is_malformed(*rejected)) {
      reply.malformed = true;
      reply.error = rejected->reason;
    } else {
      metrics_.record_claim(claim_status::rejected, 0.0);
      reply.outcome = *rejected;
    }
    done(std::move(reply));
    return;
  }
  delivery d;
  d.seq = next_seq_++;
  d.id = "http-" + std::to_string(d.seq);
  d.body = std::move(body);
  const auto now = clock_type::now();
  waiting_.emplace(d.seq, waiter{std::move(done), now, now + limits_.deadline});
  if (buffer_->size_hint() >= limits_.queue_max) {
    turn_away(d.seq, http_overload::queue_full);  // never queued
    return;
  }
  buffer_->push(std::move(d));
  metrics_.set_http_waiting(static_cast<std::int64_t>(buffer_->size_hint()));
}

void http_source::answer(std::uint64_t seq, claim_reply reply) {
  auto it = waiting_.find(seq);
  if (it == waiting_.end()) return;
  // Not claimed now, after a try that may have committed: no answer may say
  // nothing was claimed (whichever 503 it is: deadline, stopping, no database).
  if (!reply.outcome && it->second.outcome_unknown) {
    auto overload = std::move(reply.overload);
    reply = outcome_unknown_reply();
    reply.overload = std::move(overload);
  }
  auto done = std::move(it->second.done);
  waiting_.erase(it);
  done(std::move(reply));
}

void http_source::answer_all(const std::vector<delivery>& batch, const claim_reply& reply) {
  for (const auto& d : batch) answer(d.seq, reply);
}

void http_source::turn_away(std::uint64_t seq, http_overload why) {
  if (!waiting_.contains(seq)) return;
  metrics_.add_http_overload(why);
  claim_reply reply;
  reply.failure = failure_kind::transient;
  reply.overload = to_string(why);
  reply.error = why == http_overload::queue_full
                    ? fmt::format("{} requests are already waiting to be claimed (--http-queue-max); retry later",
                                  limits_.queue_max)
                    : fmt::format("not claimed within {} ms (--http-deadline-ms); nothing was claimed, retry later",
                                  limits_.deadline.count());
  answer(seq, std::move(reply));
}

claim_reply http_source::outcome_unknown_reply() {
  claim_reply reply;
  reply.failure = failure_kind::transient;
  reply.error = "a try of the claim failed on the database (lost connection or timeout) and it could not be "
                "tried again in time; a connection lost during the commit leaves it unknown whether it went "
                "through: retry (a claim that went through answers already_claimed with its code)";
  return reply;
}


void http_source::expire_waiting() {
  const auto now = clock_type::now();
  auto expired = buffer_->remove_if([&](const delivery& d) {
    auto it = waiting_.find(d.seq);
    return it != waiting_.end() && it->second.deadline <= now;
  });
  for (const auto& d : expired) turn_away(d.seq, http_overload::deadline);
  if (!expired.empty()) metrics_.set_http_waiting(static_cast<std::int64_t>(buffer_->size_hint()));
}

// Claimers expire what they find past its deadline as they take; this covers
// the time when none takes (all stalled on the database), so a request waits
// at most about its deadline plus one sweep period.
asio::awaitable<void> http_source::sweep_deadlines(std::weak_ptr<bool> alive) {
  const auto period = std::clamp(limits_.deadline / 10, std::chrono::milliseconds{1}, std::chrono::milliseconds{100});
  asio::steady_timer timer{co_await asio::this_coro::executor};
  for (;;) {
    timer.expires_after(period);
    co_await timer.async_wait(asio::use_awaitable);
    if (alive.expired()) co_return;
    expire_waiting();
  }
}

asio::awaitable<std::vector<delivery>> http_source::take(pg_connection&, std::size_t max) {
  expire_waiting();
  auto batch = buffer_->pop(max);
  metrics_.set_http_waiting(static_cast<std::int64_t>(buffer_->size_hint()));
  const auto now = clock_type::now();
  for (const auto& d : batch) {
    // A request given back after a rolled-back try counts again, from its arrival.
    if (auto it = waiting_.find(d.seq); it != waiting_.end())
      metrics_.record_http_wait(std::chrono::duration<double>(now - it->second.arrived).count());
  }
  co_return batch;
}

asio::awaitable<void> http_source::wait_for_work(pg_connection&) { co_await buffer_->wait(k_idle_wait); }

asio::awaitable<void> http_source::record(pg_connection&, std::vector<delivery>&,
                                          const std::vector<claim_outcome>&) {
  co_return;
}

void http_source::committed(std::vector<delivery>& batch, const std::vector<claim_outcome>& outcomes) {
  for (std::size_t i = 0; i < batch.size(); ++i) {
    claim_reply reply;
    reply.outcome = outcomes[i];
    answer(batch[i].seq, std::move(reply));
  }
}

void http_source::abandoned(std::vector<delivery> batch, bool unavailable) {
  // A retry-at-once failure (a concurrent duplicate of the same user, a
  // deadlock) or a try alone that failed: claim it again, the client waits
  // (under its first deadline; the try rolled back, so a 503 is still true).
  if (!unavailable) {
    buffer_->push_front(std::move(batch));
    return;
  }
  // The database failed the try: lost connection (the COMMIT may have gone
  // through unanswered) or too slow. Claimed again once a claimer has a
  // connection, under the first deadline: a claim that went through then
  // answers already_claimed with its code, instead of a 503 to a user who
  // owns a voucher. If the claimers cannot reconnect, database_unavailable()
  // answers at once.
  if (stopping_) {
    answer_all(batch, unavailable_reply());
    return;
  }
  for (const auto& d : batch)
    if (auto it = waiting_.find(d.seq); it != waiting_.end()) it->second.outcome_unknown = true;
  buffer_->push_front(std::move(batch));
  metrics_.set_http_waiting(static_cast<std::int64_t>(buffer_->size_hint()));
}

claim_reply http_source::unavailable_reply() {
  claim_reply reply;
  reply.failure = failure_kind::transient;
  reply.error = "the claim could not run now (database unavailable or busy); retry later";
  return reply;
}

claim_reply http_source::shutting_down_reply() {
  claim_reply reply;
  reply.failure = failure_kind::transient;
  reply.error = "the worker is shutting down; nothing was claimed, retry (another worker will answer)";
  return reply;
}

void http_source::stop_intake() {
  // The claimers finish the requests they took and take no more: what waits
  // untaken is answered now rather than dropped with its connection.
  stopping_ = true;
  answer_all(buffer_->pop(buffer_->size_hint()), shutting_down_reply());
  metrics_.set_http_waiting(0);
}

void http_source::database_unavailable() {
  // No claimer can connect: what waits is answered now, not at its deadline.
  answer_all(buffer_->pop(buffer_->size_hint()), unavailable_reply());
  metrics_.set_http_waiting(0);
}

}  // namespace voucherd
