#include "worker/http_surface.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "common/json_log.hpp"
#include "db/pg_connection.hpp"
#include "db/schema_check.hpp"
#include "http/shared_readiness.hpp"

namespace voucherd {

http_surface::http_surface(asio::io_context& io, const worker_config& config, metrics& registry)
    : io_{io}, config_{config}, registry_{registry},
      source_{std::make_unique<http_source>(config.campaign, registry, config.http)} {}

void http_surface::start() {
  source_->start(io_);
  // Ready: the database answers and holds this binary's schema.
  auto probe = [this](std::function<void(std::string)> answer) {
    asio::co_spawn(
        io_,
        [this, answer]() -> asio::awaitable<void> {
          pg_connection probe_conn{io_, config_.database_url, config_.deadlines, config_.pooling};
          std::string why_not;
          try {
            co_await probe_conn.connect();
            co_await require_schema(probe_conn);
          } catch (const std::exception& e) {
            why_not = e.what();
          }
          answer(why_not);
        },
        asio::detached);
  };
  auto submit = [this](std::string body, std::function<void(claim_reply)> done) {
    source_->submit(std::move(body), std::move(done));
  };
  // One probe at a time, its answer kept a second: /readyz is open to anyone
  // who can reach the port, and each probe is a new database connection.
  const shared_readiness readiness{probe, std::chrono::seconds{1}};
  server_ = std::make_unique<http_server>(io_, config_.http_listen, submit, readiness.probe(), registry_);
  if (!config_.http_token.empty()) server_->require_bearer_token(bearer_token{config_.http_token, config_.http_token_source});
  const bool tls = !config_.http_tls.cert_file.empty();
  if (tls) server_->use_tls(config_.http_tls);
  server_->start();
  log_json(log_level::info, "http listening",
           {{"listen", config_.http_listen}, {"port", server_->port()}, {"tls", tls},
            {"auth", config_.http_token.empty() ? "none" : "bearer"}});
}

void http_surface::stop() {
  source_->stop_intake();  // untaken requests answered 503 first, on connections stop() leaves open
  if (server_) server_->stop();
}

int http_surface::answers_pending() const { return server_ ? server_->answers_pending() : 0; }

}  // namespace voucherd
