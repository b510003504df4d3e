#include "source/redis_source.hpp"

#include <random>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <fmt/format.h>

#include "redis/redis_node.hpp"
#include "sql_catalog.hpp"
#include "common/backoff.hpp"
#include "common/json_log.hpp"

namespace voucherd {

namespace {

// Longer than the XREADGROUP BLOCK below, short enough to notice a dead server.
constexpr std::chrono::milliseconds k_command_timeout{2000};
constexpr int k_block_ms = 50;
constexpr int k_autoclaim_count = 100;

bool is_error(const redis_reply& r) { return r && r->type == REDIS_REPLY_ERROR; }

// KEYS: stream, dead-letter stream; ARGV: group, entry id, reason, body.
constexpr const char* k_ack_and_dead_letter_script = R"(
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'reason', ARGV[3], 'body', ARGV[4])
  return 1
end
return 0)";
std::string text_of(const redisReply* r) { return r && r->str ? std::string(r->str, r->len) : std::string{}; }

// One stream entry ([id, [field, value, ...]]) as a delivery. The message is
// its "body" field (what `voucherd enqueue` writes: the JSON message), or,
// for producers that write flat fields, the fields user_id, campaign and
// message_id, turned into that JSON message (values are strings).
std::optional<delivery> entry_to_delivery(const redisReply* e) {
  if (!e || e->type != REDIS_REPLY_ARRAY || e->elements < 2) return std::nullopt;  // deleted meanwhile
  delivery d;
  d.id = text_of(e->element[0]);
  const redisReply* fields = e->element[1];
  bool has_body = false;
  boost::json::object flat;
  for (std::size_t f = 0; fields && f + 1 < fields->elements; f += 2) {
    const auto name = text_of(fields->element[f]);
    const redisReply* v = fields->element[f + 1];
    if (name == "user_id" || name == "campaign" || name == "message_id") {
      flat[name] = text_of(v);
      continue;
    }
    if (name != "body") continue;
    has_body = true;
    if (v->len > k_max_message_bytes) {
      d.oversized = true;
      d.body.assign(v->str, k_dead_letter_body_bytes);
    } else {
      d.body = text_of(v);
    }
  }
  if (!has_body && flat.contains("user_id")) {
    d.body = boost::json::serialize(flat);
    d.oversized = d.body.size() > k_max_message_bytes;
    if (d.oversized) d.body.resize(k_dead_letter_body_bytes);
  } else if (!has_body) {
    d.poison = "stream entry has neither a body field nor a user_id field";
  }
  return d;
}

}  // namespace

redis_source::redis_source(redis_source_config config, std::size_t capacity)
    : config_{std::move(config)}, capacity_{std::max<std::size_t>(capacity, 1)} {
  if (config_.dead_letter_stream.empty()) config_.dead_letter_stream = config_.stream + ":dead";
  outcome_source_ = "redis:" + config_.stream;
}

redis_source::~redis_source() { close(); }

void redis_source::start(asio::io_context& io) {
  buffer_ = std::make_unique<message_buffer>(io);
  reader_ = std::thread{[this] { run(); }};
}

void redis_source::hand_over(delivery d) {
  {
    std::lock_guard lock{mutex_};
    if (!holding_.insert(d.id).second) return;  // this process holds it already
  }
  buffer_->push(std::move(d));
}

bool redis_source::ensure_group(redis_node& node) {
  auto r = node.command({"XGROUP", "CREATE", config_.stream, config_.group, "0", "MKSTREAM"});
  if (!r) return false;
  if (is_error(r) && text_of(r.get()).rfind("BUSYGROUP", 0) != 0) {
    log_json(log_level::error, "cannot create the consumer group", {{"error", text_of(r.get())}});
    return false;
  }
  return true;
}

// Reads the entries of an XREADGROUP reply ([[stream, [entry...]]]) into the buffer.
bool redis_source::read_entries(redis_node& node, const std::vector<std::string>& argv) {
  auto r = node.command(argv);
  if (!r) return false;
  if (is_error(r)) {
    const auto why = text_of(r.get());
    log_json(log_level::warn, "redis refused a read", {{"command", argv[0]}, {"error", why}});
    if (why.rfind("NOGROUP", 0) == 0) ensure_group(node);
    return false;
  }
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->elements < 2) return true;  // timeout
  const redisReply* entries = r->element[0]->element[1];
  for (std::size_t i = 0; entries && i < entries->elements; ++i)
    if (auto d = entry_to_delivery(entries->element[i])) hand_over(std::move(*d));
  return true;
}

bool redis_source::autoclaim(redis_node& node) {
  std::string cursor = "0-0";
  std::int64_t taken = 0, poisoned = 0;
  for (int round = 0; round < 10; ++round) {
    std::vector<std::string> argv{"XAUTOCLAIM", config_.stream, config_.group, config_.consumer,
                                  std::to_string(config_.claim_idle.count()), cursor, "COUNT",
                                  std::to_string(k_autoclaim_count)};
    // XAUTOCLAIM also returns this process's own entries that waited long
    // (the database was away); hand_over() skips those it still holds.
    auto r = node.command(argv);
    if (!r || is_error(r)) return r != nullptr;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) return true;
    cursor = text_of(r->element[0]);
    const redisReply* entries = r->element[1];
    for (std::size_t i = 0; entries && i < entries->elements; ++i) {
      auto entry = entry_to_delivery(entries->element[i]);
      if (!entry) continue;
      auto& d = *entry;
      {
        std::lock_guard lock{mutex_};
        if (holding_.count(d.id)) continue;
      }
      auto p = node.command({"XPENDING", config_.stream, config_.group, d.id, d.id, "1"});
      if (p && p->type == REDIS_REPLY_ARRAY && p->elements == 1 && p->element[0]->elements >= 4)
        d.deliveries = static_cast<int>(p->element[0]->element[3]->integer);
      if (d.deliveries > config_.max_deliveries)
        d.poison = fmt::format("delivered {} times without an outcome (max {})", d.deliveries, config_.max_deliveries);
      ++taken;
      poisoned += d.poison.has_value();
      hand_over(std::move(d));
    }
    if (cursor == "0-0") break;
  }
  if (taken > 0)
    log_json(log_level::info, "took over pending messages of idle consumers",
             {{"messages", taken}, {"over_max_deliveries", poisoned}, {"claim_idle_ms", config_.claim_idle.count()}});
  return true;
}

bool redis_source::flush_acks(redis_node& node) {
  std::vector<ack> batch;
  {
    std::lock_guard lock{mutex_};
    batch.swap(acks_);
  }
  if (batch.empty()) return true;
  // A rejected entry is acknowledged and copied to the dead-letter stream in
  // one script, the copy only if this call is the one that removed it from
  // the pending list: exactly one copy, whichever consumer acks it (another
  // may have taken it over) and however often a lost reply makes us retry.
  // An error reply (LOADING while a restarted server reads its data) is a
  // failure like a lost connection.
  bool ok = true;
  std::vector<std::string> plain{"XACK", config_.stream, config_.group};
  for (auto& a : batch) {
    if (!a.rejected) {
      plain.push_back(a.id);
      continue;
    }
    auto r = node.command({"EVAL", k_ack_and_dead_letter_script, "2", config_.stream, config_.dead_letter_stream,
                           config_.group, a.id, a.reason, a.body});
    if (!r || is_error(r)) {
      ok = false;
      break;
    }
    a.rejected = false;  // acknowledged (and copied, if ours): a retry only acks it
  }
  if (ok && plain.size() > 3) {
    auto r = node.command(plain);
    ok = r && !is_error(r);
  }
  std::lock_guard lock{mutex_};
  if (!ok) {
    acks_.insert(acks_.begin(), batch.begin(), batch.end());
    return false;
  }
  for (const auto& a : batch) holding_.erase(a.id);
  return true;
}

void redis_source::run() {
  const auto endpoints = parse_redis_nodes(config_.url);
  redis_node node{endpoints.at(0), k_command_timeout};
  backoff retry{std::random_device{}(), std::chrono::milliseconds{50}, std::chrono::milliseconds{2000}};
  bool group_ready = false, own_pending_read = false;
  auto last_autoclaim = std::chrono::steady_clock::now();
  const auto autoclaim_every = std::max(std::chrono::milliseconds{100}, config_.claim_idle / 2);
  std::chrono::steady_clock::time_point close_deadline{};
  auto failed = [&](const char* what) {
    const auto wait = retry.next();
    if (retry.attempts() == 1 || retry.attempts() % 20 == 0)
      log_json(log_level::warn, "redis unavailable; retrying",
               {{"during", what}, {"retry_in_ms", wait.count()}, {"attempt", retry.attempts()}});
    std::unique_lock lock{mutex_};
    wake_.wait_for(lock, wait);
  };
  for (;;) {
    if (closing_.load()) {
      if (close_deadline == std::chrono::steady_clock::time_point{})
        close_deadline = std::chrono::steady_clock::now() + std::chrono::seconds{2};
      bool empty;
      {
        std::lock_guard lock{mutex_};
        empty = acks_.empty();
      }
      if (empty) return;
      if (std::chrono::steady_clock::now() > close_deadline) {
        // Unacknowledged entries stay pending; another consumer takes them
        // over and the claim answers already_claimed.
        log_json(log_level::warn, "exiting with unacknowledged redis messages");
        return;
      }
    }
    if (!group_ready) {
      if (!ensure_group(node)) { failed("XGROUP CREATE"); continue; }
      group_ready = true;
      retry.reset();
    }
    if (!flush_acks(node)) { failed("XACK"); continue; }
    if (stop_reading_.load()) {
      reader_idle_.store(true);
      std::unique_lock lock{mutex_};
      wake_.wait_for(lock, std::chrono::milliseconds{20}, [&] { return !acks_.empty() || closing_.load(); });
      continue;
    }
    if (!own_pending_read) {
      if (!read_entries(node, {"XREADGROUP", "GROUP", config_.group, config_.consumer, "COUNT", "100000",
                               "STREAMS", config_.stream, "0"})) { failed("XREADGROUP 0"); continue; }
      own_pending_read = true;
    }
    const auto room = capacity_ > buffer_->size_hint() ? capacity_ - buffer_->size_hint() : 0;
    if (room == 0) {
      std::unique_lock lock{mutex_};
      wake_.wait_for(lock, std::chrono::milliseconds{5});
      continue;
    }
    if (std::chrono::steady_clock::now() - last_autoclaim >= autoclaim_every) {
      last_autoclaim = std::chrono::steady_clock::now();
      if (!autoclaim(node)) { failed("XAUTOCLAIM"); continue; }
    }
    if (!read_entries(node, {"XREADGROUP", "GROUP", config_.group, config_.consumer, "COUNT", std::to_string(room),
                             "BLOCK", std::to_string(k_block_ms), "STREAMS", config_.stream, ">"})) {
      group_ready = false;
      failed("XREADGROUP");
      continue;
    }
    retry.reset();
  }
}

asio::awaitable<std::vector<delivery>> redis_source::take(pg_connection&, std::size_t max) {
  co_return buffer_->pop(max);
}

asio::awaitable<void> redis_source::wait_for_work(pg_connection&) { co_await buffer_->wait(k_idle_wait); }

asio::awaitable<void> redis_source::record(pg_connection& conn, std::vector<delivery>& batch,
                                           const std::vector<claim_outcome>& outcomes) {
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const auto& o = outcomes[i];
    if (o.status != claim_status::rejected) continue;
    if (o.dead_lettered) continue;  // its entry id was another message's: the claim dead-lettered it
    std::vector<pg_param> params{outcome_source_, batch[i].id, o.campaign, o.user_id.empty() ? pg_param{} : pg_param{o.user_id},
                                    o.reason, bytea_hex(batch[i].body)};
    auto rows = co_await conn.exec(sql::redis_record_rejected, std::move(params));
    batch[i].dead_lettered = !rows.empty() && rows.text(0, 0) == "t";
  }
}

void redis_source::committed(std::vector<delivery>& batch, const std::vector<claim_outcome>& outcomes) {
  {
    std::lock_guard lock{mutex_};
    for (std::size_t i = 0; i < batch.size(); ++i)
      acks_.push_back({batch[i].id, outcomes[i].status == claim_status::rejected, outcomes[i].reason,
                       batch[i].body.substr(0, k_dead_letter_body_bytes)});
  }
  wake_.notify_all();
}

void redis_source::abandoned(std::vector<delivery> batch, bool) { buffer_->push_front(std::move(batch)); }

void redis_source::close() {
  stop_reading_.store(true);
  closing_.store(true);
  wake_.notify_all();
  if (reader_.joinable()) reader_.join();
}

}  // namespace voucherd
