#pragma once
// The worker's HTTP surface (--http, Boost.Beast on the worker's main
// io_context): POST /v1/claims hands each body to an http_source, which the
// worker drains with claimers of their own (so an HTTP claim never waits
// behind a queue batch); GET /readyz opens a database connection and says
// whether it could; /healthz and /metrics come from the server itself.
#include <memory>

#include <boost/asio/io_context.hpp>

#include "claim/metrics.hpp"
#include "http/http_server.hpp"
#include "source/http_source.hpp"
#include "worker/worker_config.hpp"

namespace voucherd {

class http_surface {
 public:
  http_surface(asio::io_context& io, const worker_config& config, metrics& registry);

  // Binds (config.http_listen) and serves; throws voucherd_error(usage) when
  // it cannot.
  void start();
  // Takes no more requests: those not yet taken by a claimer are answered
  // 503, the claims in flight are answered when they end.
  void stop();
  // Answers not yet written to their clients (http_server::answers_pending).
  int answers_pending() const;
  // What the HTTP claimers drain.
  message_source& source() { return *source_; }
  unsigned short port() const { return server_->port(); }

 private:
  asio::io_context& io_;
  const worker_config& config_;
  metrics& registry_;
  std::unique_ptr<http_source> source_;
  std::unique_ptr<http_server> server_;
};

}  // namespace voucherd
