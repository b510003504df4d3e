#pragma once
// The HTTP surface of `voucherd worker --http ADDR:PORT` (SPEC section 5), on
// Boost.Beast, running on the caller's io_context:
//
//   POST /v1/claims   body = one queue message ({"user_id": ..., "campaign": ...,
//                     "message_id": ...}); reply = the outcome JSON.
//                     200 claimed/already_claimed, 409 sold_out, 422 rejected,
//                     400 malformed, 413 body > k_max_body_bytes, 503 transient,
//                     500 internal. The map lives in one function, http_status_for().
//                     With a bearer token set: 401 (WWW-Authenticate: Bearer)
//                     unless the request carries it.
//   GET  /healthz     200 while the process serves requests.
//   GET  /readyz      200 when the readiness probe says ready (database reachable and
//                     migrated), else 503 with {"ready":false,"reason":...}.
//   GET  /metrics     Prometheus text (content-type text/plain; version=0.0.4).
//
// The server records no claim metrics itself: the claim path behind
// claim_handler calls metrics::record_claim, for every source alike.
//
// The server parses HTTP only; what a message means is the claim_handler's job
// (the worker wires the real claim path). Each connection has a deadline
// (k_request_timeout per request, idle keep-alive included), so a slow or
// silent client cannot hold a connection open.
//
// Binding: loopback only, unless a bearer token is required (the claim
// endpoint is then authenticated; /healthz, /readyz and /metrics stay open
// for probes and scrapers) or allow_non_loopback is true (tests); start()
// throws voucherd_error(usage) for a malformed address or a refused one.
//
// TLS: after use_tls(), every connection is TLS (1.2+) on the same port,
// with the same keep-alive and deadlines; without it, plain HTTP.
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/io_context.hpp>

#include "claim/claim_outcome.hpp"
#include "claim/metrics.hpp"
#include "common/failure.hpp"
#include "common/tls_context.hpp"
#include "http/bearer_token.hpp"

namespace voucherd {

// Called with the request body; must call done exactly once, on the
// io_context's thread (post to it when the claim ran elsewhere).
using claim_handler = std::function<void(std::string body, std::function<void(claim_reply)> done)>;
// Called for GET /readyz; must call its argument exactly once, on the
// io_context's thread, with "" when ready, else why not.
using readiness_probe = std::function<void(std::function<void(std::string why_not)>)>;

// The one map from a claim reply to an HTTP status (see the table above).
unsigned http_status_for(const claim_reply& reply);

// Checks a listen address as start() will: "HOST:PORT" with HOST an IP
// address or localhost, and loopback unless non_loopback_allowed. Throws
// voucherd_error(usage) naming the address; for validating flags before
// anything starts.
void check_listen_address(const std::string& listen, bool non_loopback_allowed);

class http_server {
 public:
  static constexpr std::size_t k_max_body_bytes = 64 * 1024;
  static constexpr std::chrono::milliseconds k_request_timeout{30'000};
  // How long the accept loop waits after a failed accept (out of file
  // descriptors) before it tries again.
  static constexpr std::chrono::milliseconds k_accept_retry_pause{100};

  // listen = "HOST:PORT", e.g. "127.0.0.1:8080"; PORT 0 picks a free port
  // (read it back with port()). HOST is an IP address or "localhost".
  http_server(boost::asio::io_context& io, const std::string& listen, claim_handler on_claim,
              readiness_probe probe, metrics& registry, bool allow_non_loopback = false);
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // Per-connection deadline for reading a request (idle keep-alive included)
  // and for writing its answer; default k_request_timeout. Before start().
  void set_request_timeout(std::chrono::milliseconds timeout);
  // POST /v1/claims then requires "Authorization: Bearer <token>", and a
  // non-loopback address is allowed. Before start().
  void require_bearer_token(bearer_token token);
  // Serves TLS with these PEM files; throws voucherd_error(config) when they
  // cannot be used (tls_context.hpp). Before start().
  void use_tls(const tls_server_files& files);

  // Binds and starts accepting. Throws voucherd_error(usage) for a bad or
  // non-loopback address (unless allowed or a token is required),
  // voucherd_error(transient) when the port cannot be bound.
  void start();
  // Stops accepting and closes the connections that wait for a request;
  // returns at once. A connection whose request is with claim_handler stays
  // open until its answer is written (Connection: close), then closes: a
  // claim that commits during shutdown is still told to its client. Safe to
  // call from any thread, and more than once. Destroy the server before its
  // io_context.
  void stop();
  // Requests handed to claim_handler whose answers are not written yet (the
  // worker waits for 0 before it stops the io_context, bounded by its grace).
  int answers_pending() const;
  // The bound port (after start()).
  unsigned short port() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace voucherd
