// enqueue: puts messages on the Postgres queue or a Redis stream, one JSON
// message per line of FILE ({"user_id": ..., "campaign": ..., "message_id":
// ...}; only user_id required). Lines are queued as they are, bad ones
// included: judging them is the worker's job (it rejects and dead-letters
// them with the reason). --campaign fills in the campaign of well-formed
// messages that name none.
#include <fstream>
#include <iostream>
#include <memory>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>
#include <pqxx/pqxx>

#include "cli/commands.hpp"
#include "common/failure.hpp"
#include "common/text_lines.hpp"
#include "db/session.hpp"
#include "redis/redis_node.hpp"
#include "source/message.hpp"
#include "source/pg_queue_source.hpp"
#include "worker/worker_config.hpp"

namespace voucherd::cli {

namespace {

// Messages per transaction (pg) or pipeline (redis); progress every k_report.
constexpr std::size_t k_enqueue_chunk = 1000;
constexpr std::size_t k_report = 100000;

std::string with_campaign(std::string line, const std::string& campaign) {
  if (campaign.empty()) return line;
  boost::system::error_code ec;
  auto v = boost::json::parse(line, ec);
  if (ec || !v.is_object() || v.get_object().contains("campaign")) return line;
  v.get_object()["campaign"] = campaign;
  return boost::json::serialize(v);
}

class pg_sink {
 public:
  explicit pg_sink(const common_options& common) : db_{open_session(common)} {}
  void put(const std::vector<std::string>& bodies) { enqueue_messages(db_.conn(), bodies); }

 private:
  db_session db_;
};

class redis_sink {
 public:
  redis_sink(const std::string& url, std::string stream)
      : node_{parse_redis_nodes(url).at(0), k_redis_timeout}, stream_{std::move(stream)} {}
  void put(const std::vector<std::string>& bodies) {
    // Pipelined: every XADD is sent before the first reply is read.
    std::vector<std::vector<std::string>> commands;
    for (const auto& b : bodies) commands.push_back({"XADD", stream_, "*", "body", b});
    const auto replies = node_.pipeline(commands);
    if (replies.empty())
      throw voucherd_error{failure_kind::transient, fmt::format("Redis at {} failed during XADD", node_.endpoint().url())};
    for (const auto& reply : replies)
      if (reply->type == REDIS_REPLY_ERROR)
        throw voucherd_error{failure_kind::transient, fmt::format("Redis refused XADD: {}", reply->str)};
  }

 private:
  static constexpr std::chrono::milliseconds k_redis_timeout{10000};
  redis_node node_;
  std::string stream_;
};

}  // namespace

int run_enqueue(const args& a) {
  common_flags url_flag;
  std::string source, campaign, path;
  std::string redis_url = redis_source_config::k_default_url;
  std::string stream = redis_source_config::k_default_stream;
  po::options_description desc{
      "voucherd enqueue: put one JSON message per line of FILE on a queue; progress on stderr, "
      "a summary line on stdout"};
  add_common(desc, url_flag);
  desc.add_options()
      ("source", po::value(&source)->required(), "pg (the message_queue table) or redis (a stream)")
      ("campaign", po::value(&campaign), "campaign for messages that name none")
      ("file", po::value(&path)->required(), "message file; - reads stdin")
      ("redis-url", po::value(&redis_url)->default_value(redis_url), "redis: the server")
      ("stream", po::value(&stream)->default_value(stream), "redis: the stream");
  po::variables_map vm;
  if (!parse(a, "voucherd enqueue --source pg|redis [--campaign NAME] FILE", desc, {"file"}, vm)) return k_exit_ok;
  if (source != "pg" && source != "redis")
    throw voucherd_error{failure_kind::usage, fmt::format("--source must be pg or redis, got '{}'", source)};
  std::ifstream file;
  std::istream& in = open_input(path, file);

  std::unique_ptr<pg_sink> pg;
  std::unique_ptr<redis_sink> redis;
  if (source == "pg") pg = std::make_unique<pg_sink>(resolve_common(url_flag, "enqueue"));
  else redis = std::make_unique<redis_sink>(redis_url, stream);

  std::vector<std::string> chunk;
  std::size_t total = 0;
  auto flush = [&] {
    if (chunk.empty()) return;
    if (pg) pg->put(chunk);
    else redis->put(chunk);
    total += chunk.size();
    if (total % k_report < chunk.size()) say(fmt::format("enqueue: {} messages", total));
    chunk.clear();
  };
  std::string line;
  // A line cut to k_max_message_bytes + 1 bytes is still an oversized
  // message, which the worker dead-letters (as the stdin source reads one).
  text_lines lines{in, path == "-" ? "stdin" : path, k_max_message_bytes};
  while (lines.next(line)) {
    if (line.empty()) continue;
    chunk.push_back(with_campaign(std::move(line), campaign));
    if (chunk.size() == k_enqueue_chunk) flush();
  }
  flush();
  say(fmt::format("enqueue: {} messages on {}", total, source == "pg" ? "the pg queue" : stream));
  boost::json::object summary;
  summary["enqueued"] = total;
  summary["source"] = source;
  print_json(summary);
  return k_exit_ok;
}

}  // namespace voucherd::cli
