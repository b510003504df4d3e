#include "source/http_source.hpp"

namespace voucherd {

void http_source::start(asio::io_context& io) { buffer_ = std::make_unique<message_buffer>(io); }

void http_source::submit(std::string body, std::function<void(claim_reply)> done) {
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
  waiting_.emplace(d.seq, std::move(done));
  buffer_->push(std::move(d));
}

asio::awaitable<std::vector<delivery>> http_source::take(pg_connection&, std::size_t max) {
  co_return buffer_->pop(max);
}

asio::awaitable<void> http_source::wait_for_work(pg_connection&) { co_await buffer_->wait(k_idle_wait); }

asio::awaitable<void> http_source::record(pg_connection&, std::vector<delivery>&,
                                          const std::vector<claim_outcome>&) {
  co_return;
}

void http_source::committed(std::vector<delivery>& batch, const std::vector<claim_outcome>& outcomes) {
  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto it = waiting_.find(batch[i].seq);
    if (it == waiting_.end()) continue;
    auto done = std::move(it->second);
    waiting_.erase(it);
    claim_reply reply;
    reply.outcome = outcomes[i];
    done(std::move(reply));
  }
}

void http_source::abandoned(std::vector<delivery> batch, bool unavailable) {
  // A retry-at-once failure (a concurrent duplicate of the same user, a
  // deadlock) or a try alone that failed: claim it again, the client waits.
  if (!unavailable) {
    buffer_->push_front(std::move(batch));
    return;
  }
  for (auto& d : batch) {
    auto it = waiting_.find(d.seq);
    if (it == waiting_.end()) continue;
    auto done = std::move(it->second);
    waiting_.erase(it);
    claim_reply reply;
    reply.failure = failure_kind::transient;
    reply.error = "the claim could not run now (database unavailable or busy); retry later";
    done(std::move(reply));
  }
}

void http_source::database_unavailable() {
  auto waiting = buffer_->pop(buffer_->size_hint());
  if (!waiting.empty()) abandoned(std::move(waiting), true);
}

}  // namespace voucherd
