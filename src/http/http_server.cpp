// The HTTP surface, in the shape of Beast's awaitable server example: an
// accept loop and one session per connection, each a coroutine on its own
// strand, a deadline per request on the session's tcp_stream, and
// handle_request, which turns a request into its response and knows nothing
// of connections. The session's request loop is one template for both
// streams, plain tcp_stream and ssl_stream over it (Beast's
// advanced_server_flex shape): TLS adds a handshake before it and a
// close_notify after it, and nothing inside it.
#include "http/http_server.hpp"
#include "claim/claim_request.hpp"
#include "db/classify.hpp"
#include "common/json_log.hpp"

#include <atomic>
#include <exception>
#include <optional>
#include <mutex>
#include <vector>

#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

namespace voucherd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
namespace ssl = asio::ssl;

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

unsigned http_status_for(const claim_reply& reply) {
  if (reply.outcome) {
    switch (reply.outcome->status) {
      case claim_status::claimed:
      case claim_status::already_claimed: return 200;
      case claim_status::sold_out: return 409;
      case claim_status::rejected: return 422;
    }
  }
  if (reply.malformed) return 400;
  if (reply.failure) {
    switch (*reply.failure) {
      case failure_kind::usage: return 400;
      case failure_kind::rejected: return 422;
      case failure_kind::transient: return 503;
      case failure_kind::internal: return 500;
      case failure_kind::config: return 503;  // not this request's fault; /readyz says why
    }
  }
  return 500;  // a handler that answered nothing is a bug
}

namespace {

constexpr const char* k_json = "application/json";
constexpr const char* k_prometheus = "text/plain; version=0.0.4; charset=utf-8";

enum class route { claims, healthz, readyz, metrics, not_found, method_not_allowed };

struct endpoint {
  std::string_view path;
  http::verb method;  // GET endpoints answer HEAD too
  route to;
};

constexpr endpoint k_endpoints[] = {
    {"/v1/claims", http::verb::post, route::claims},
    {"/healthz", http::verb::get, route::healthz},
    {"/readyz", http::verb::get, route::readyz},
    {"/metrics", http::verb::get, route::metrics},
};

// Pure: the endpoint of the request's path, or nullptr.
const endpoint* endpoint_of(const request& req) {
  const auto target = req.target();
  const auto path = target.substr(0, target.find('?'));
  for (const auto& e : k_endpoints)
    if (path == e.path) return &e;
  return nullptr;
}

// Pure: which endpoint a request is for.
route route_of(const request& req) {
  const auto* e = endpoint_of(req);
  if (!e) return route::not_found;
  const auto method = req.method();
  return method == e->method || (e->method == http::verb::get && method == http::verb::head)
             ? e->to
             : route::method_not_allowed;
}

// Pure: the Allow header of a 405 (RFC 9110: the methods the path answers).
std::string_view allowed_methods(const request& req) {
  const auto* e = endpoint_of(req);
  return e && e->method == http::verb::post ? "POST" : "GET, HEAD";
}

// Pure: a complete response to req.
response make_response(const request& req, unsigned status, const char* content_type, std::string body) {
  response res{static_cast<http::status>(status), req.version()};
  res.set(http::field::server, "voucherd");
  res.set(http::field::content_type, content_type);
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  if (req.method() == http::verb::head) res.body().clear();
  return res;
}

std::string error_body(std::string_view error, std::string_view reason) {
  boost::json::object j;
  j["error"] = error;
  j["reason"] = reason;
  return boost::json::serialize(j);
}

// 401 for a claim without the bearer token (RFC 6750 section 3). The body
// never echoes what was presented.
response unauthorized(const request& req) {
  const bool presented = req.find(http::field::authorization) != req.end();
  auto res = make_response(req, 401, k_json,
                           error_body("unauthorized", "POST /v1/claims needs \"Authorization: Bearer <token>\""));
  res.set(http::field::www_authenticate,
          presented ? R"(Bearer realm="voucherd", error="invalid_token")" : R"(Bearer realm="voucherd")");
  return res;
}

// What a 503 asks of the client (Retry-After), and how long its connection
// then waits before its next request is read.
constexpr std::chrono::seconds k_retry_after{1};

response claim_response(const request& req, const claim_reply& reply) {
  const unsigned status = http_status_for(reply);
  if (reply.outcome) return make_response(req, status, k_json, to_json_line(*reply.outcome));
  const char* error = reply.malformed ? "malformed" : reply.failure ? to_string(*reply.failure) : "internal";
  boost::json::object body{{"error", error}, {"reason", reply.error}};
  if (!reply.overload.empty()) body["overload"] = reply.overload;
  auto res = make_response(req, status, k_json, boost::json::serialize(body));
  if (status == 503) res.set(http::field::retry_after, std::to_string(k_retry_after.count()));
  return res;
}

struct listen_address {
  asio::ip::address host;
  unsigned short port = 0;
};

listen_address parse_listen(const std::string& listen, bool allow_non_loopback) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size())
    throw voucherd_error{failure_kind::usage,
                         fmt::format("--http '{}': expected HOST:PORT, e.g. 127.0.0.1:8080", listen)};
  std::string host = listen.substr(0, colon);
  const std::string port_text = listen.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host == "localhost") host = "127.0.0.1";
  boost::system::error_code ec;
  listen_address out;
  out.host = asio::ip::make_address(host, ec);
  if (ec)
    throw voucherd_error{failure_kind::usage,
                         fmt::format("--http '{}': '{}' is not an IP address (or localhost)", listen, host)};
  unsigned long port = 0;
  std::size_t used = 0;
  try {
    port = std::stoul(port_text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != port_text.size() || port > 65535)
    throw voucherd_error{failure_kind::usage,
                         fmt::format("--http '{}': port must be a number 0..65535", listen)};
  out.port = static_cast<unsigned short>(port);
  if (!allow_non_loopback && !out.host.is_loopback())
    throw voucherd_error{failure_kind::usage,
                         fmt::format("--http '{}': refusing to listen on a non-loopback address without "
                                     "authentication: give a bearer token with --http-token-file (or "
                                     "VOUCHERD_HTTP_TOKEN_FILE), or listen on 127.0.0.1 or ::1",
                                     listen)};
  return out;
}

// What a request may reach: everything handle_request needs, nothing about
// connections.
struct request_services {
  claim_handler on_claim;
  readiness_probe probe;
  metrics& registry;
  std::optional<bearer_token> token;  // when set, POST /v1/claims requires it
};

// Bridges a callback-style call into a coroutine: start(done) begins the
// work, done(value) resumes the awaiting coroutine with value. done may run
// inside start (a probe or a malformed body answers at once) or later on the
// io_context's thread; the resumption is always posted to the coroutine's own
// executor, so the coroutine never runs nested inside start nor off its
// strand. If start throws before answering, the coroutine gets the exception;
// a second done is ignored. Should done be dropped uncalled, the waiting
// coroutine is destroyed with it (its connection closes) rather than leaked.
template <typename Value, typename Start>
asio::awaitable<Value> async_answer(Start start) {
  return asio::async_initiate<const asio::use_awaitable_t<>, void(std::exception_ptr, Value)>(
      [](auto handler, Start start) {
        using handler_type = decltype(handler);
        // std::function needs a copyable callable; the coroutine's handler is move-only.
        auto pending = std::make_shared<std::optional<handler_type>>(std::move(handler));
        auto complete = [pending](std::exception_ptr error, Value value) {
          if (!*pending) return;
          handler_type resume = std::move(**pending);
          pending->reset();
          const auto executor = asio::get_associated_executor(resume);
          asio::post(executor, [resume = std::move(resume), error, value = std::move(value)]() mutable {
            std::move(resume)(error, std::move(value));
          });
        };
        try {
          start([complete](Value value) { complete(nullptr, std::move(value)); });
        } catch (...) {
          complete(std::current_exception(), Value{});
        }
      },
      asio::use_awaitable, std::move(start));
}

// A request in, its response out. Knows nothing of sockets or deadlines; its
// only waits are on the claim handler and the readiness probe.
asio::awaitable<response> handle_request(request req, const request_services& services) {
  // RFC 9112 section 3.2: a 1.1 request without Host is answered 400.
  if (req.version() >= 11 && req.find(http::field::host) == req.end())
    co_return make_response(req, 400, k_json, error_body("malformed", "an HTTP/1.1 request needs a Host header"));
  switch (route_of(req)) {
    case route::healthz: co_return make_response(req, 200, k_json, R"({"status":"ok"})");
    case route::metrics: co_return make_response(req, 200, k_prometheus, services.registry.prometheus_text());
    case route::not_found:  // the target may be any bytes: echoed as valid UTF-8
      co_return make_response(req, 404, k_json, error_body("not_found", printable_excerpt(req.target())));
    case route::method_not_allowed: {
      auto res = make_response(req, 405, k_json, error_body("method_not_allowed", req.method_string()));
      res.set(http::field::allow, allowed_methods(req));
      co_return res;
    }
    case route::readyz: {
      std::string why_not;
      if (services.probe) {
        try {
          why_not = co_await async_answer<std::string>([&](auto done) { services.probe(std::move(done)); });
        } catch (const std::exception& e) {
          why_not = e.what();  // a probe that cannot even ask is an answer too
        }
      }
      if (why_not.empty()) co_return make_response(req, 200, k_json, R"({"ready":true})");
      co_return make_response(req, 503, k_json,
                              boost::json::serialize(boost::json::object{{"ready", false}, {"reason", why_not}}));
    }
    case route::claims: {
      if (services.token && !services.token->admits(req[http::field::authorization])) co_return unauthorized(req);
      claim_reply reply;
      try {
        reply = co_await async_answer<claim_reply>(
            [&](auto done) { services.on_claim(std::move(req.body()), std::move(done)); });
      } catch (const std::exception& e) {
        // The handler threw instead of answering: still one answer per request.
        reply = claim_reply{};
        reply.failure = classify(e);
        reply.error = e.what();
      }
      co_return claim_response(req, reply);
    }
  }
  co_return make_response(req, 500, k_json, error_body("internal", "unrouted request"));  // unreachable
}

// The 413 for a request whose body passed the limit. The body is not read,
// so the connection cannot be reused: the answer says close.
response body_too_large(request head) {
  head.keep_alive(false);
  return make_response(
      head, 413, k_json,
      error_body("malformed", fmt::format("request body exceeds {} bytes", http_server::k_max_body_bytes)));
}

// The answer to a request whose framing could not be parsed (RFC 9112: a bad
// Content-Length or Transfer-Encoding, a malformed start line or header),
// or nullopt when there is no one to answer (the client went away mid-way).
// The rest of the stream cannot be trusted: the answer says close.
std::optional<response> unparsable_request(const beast::error_code& ec) {
  if (ec.category() != beast::http::make_error_code(http::error::bad_target).category()) return std::nullopt;
  if (ec == http::error::partial_message || ec == http::error::short_read) return std::nullopt;
  request head{http::verb::unknown, "/", 11};
  head.keep_alive(false);
  if (ec == http::error::header_limit)
    return make_response(head, 431, k_json, error_body("malformed", "request header fields too large"));
  return make_response(head, 400, k_json, error_body("malformed", fmt::format("unparsable request: {}", ec.message())));
}

// Sessions and the accept loop only return; an exception out of one is a bug
// here and reaches io_context::run, as it did before coroutines.
void rethrow_failure(std::exception_ptr error) {
  if (error) std::rethrow_exception(error);
}

}  // namespace

struct http_server::impl {
  impl(asio::io_context& io, std::string listen, claim_handler on_claim, readiness_probe probe,
       metrics& registry, bool allow_non_loopback)
      : io_{io},
        acceptor_{asio::make_strand(io)},
        listen_{std::move(listen)},
        services_{std::move(on_claim), std::move(probe), registry, std::nullopt},
        allow_non_loopback_{allow_non_loopback} {}

  using tls_stream = beast::ssl_stream<beast::tcp_stream>;

  static asio::awaitable<void> accept_loop(std::shared_ptr<impl> self);
  // `busy` (the connection's, on its strand only): a request is between
  // being read and its answer written; stop() leaves such a connection open.
  using busy_flag = std::shared_ptr<bool>;
  static asio::awaitable<void> run_session(std::shared_ptr<impl> self, std::shared_ptr<beast::tcp_stream> stream,
                                           busy_flag busy);
  static asio::awaitable<void> run_tls_session(std::shared_ptr<impl> self, std::shared_ptr<tls_stream> stream,
                                               busy_flag busy);
  // Reads requests and answers them until the client is done or the server
  // stops (true) or the connection failed or was closed (false).
  template <typename Stream>
  static asio::awaitable<bool> serve_requests(std::shared_ptr<impl> self, Stream& stream, bool& busy);

  // An open connection, as stop() sees it: close() shuts its socket down on
  // the session's strand, whatever the stream type.
  struct open_connection {
    std::weak_ptr<void> stream;
    std::function<void()> close;
  };

  // Registers an accepted connection so stop() can close it, and returns
  // its busy flag; null once stop() ran, which closes the race of an accept
  // that completed just before the acceptor was closed.
  template <typename Stream>
  busy_flag track(const std::shared_ptr<Stream>& stream) {
    std::weak_ptr<Stream> weak = stream;
    auto busy = std::make_shared<bool>(false);
    auto close = [weak, busy] {
      auto s = weak.lock();
      if (!s) return;
      // Closing on the session's own strand makes its pending read finish
      // with an error, and the session coroutine returns. A busy session
      // closes itself once its answer is written.
      asio::post(s->get_executor(), [s, busy] {
        if (*busy) return;
        auto& lowest = beast::get_lowest_layer(*s);
        beast::error_code ec;
        lowest.socket().shutdown(tcp::socket::shutdown_both, ec);
        lowest.close();
      });
    };
    std::lock_guard lock{connections_mutex_};
    if (stopping_) return nullptr;
    std::erase_if(connections_, [](const auto& c) { return c.stream.expired(); });
    connections_.push_back({stream, std::move(close)});
    return busy;
  }

  asio::io_context& io_;
  tcp::acceptor acceptor_;
  std::string listen_;
  request_services services_;
  bool allow_non_loopback_;
  std::chrono::milliseconds request_timeout_ = http_server::k_request_timeout;
  std::shared_ptr<ssl::context> tls_;  // null: plain HTTP
  std::atomic<unsigned short> port_{0};
  std::mutex connections_mutex_;
  std::vector<open_connection> connections_;
  bool accept_failing_ = false;  // on the acceptor's strand only
  // Set by stop() before it takes connections_mutex_: track() reads it under
  // the mutex, so a connection is either refused or in the list stop() closes.
  std::atomic<bool> stopping_{false};
  std::atomic<int> answers_pending_{0};
};

asio::awaitable<void> http_server::impl::accept_loop(std::shared_ptr<impl> self) {
  for (;;) {
    beast::error_code ec;
    // Each connection gets its own strand, so sessions stay serial even on a
    // multi-threaded io_context.
    tcp::socket socket = co_await self->acceptor_.async_accept(asio::make_strand(self->io_),
                                                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !self->acceptor_.is_open()) co_return;
    if (ec) {
      // Out of file descriptors (EMFILE) the same accept fails at once, again
      // and again: without a pause the loop spun a core and starved the
      // sessions that could free them. Logged once per run of failures.
      if (!self->accept_failing_)
        log_json(log_level::warn, "http accept failing; pausing between tries", {{"error", ec.message()}});
      self->accept_failing_ = true;
      asio::steady_timer pause{self->acceptor_.get_executor(), http_server::k_accept_retry_pause};
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    self->accept_failing_ = false;
    if (self->tls_) {
      auto stream = std::make_shared<tls_stream>(std::move(socket), *self->tls_);
      auto busy = self->track(stream);
      if (!busy) co_return;
      asio::co_spawn(stream->get_executor(), run_tls_session(self, stream, std::move(busy)), rethrow_failure);
    } else {
      auto stream = std::make_shared<beast::tcp_stream>(std::move(socket));
      auto busy = self->track(stream);
      if (!busy) co_return;
      asio::co_spawn(stream->get_executor(), run_session(self, stream, std::move(busy)), rethrow_failure);
    }
  }
}

// Read a request, answer it, repeat while keep-alive.
template <typename Stream>
asio::awaitable<bool> http_server::impl::serve_requests(std::shared_ptr<impl> self, Stream& stream, bool& busy) {
  // Counts a request from its hand-over to claim_handler until its answer
  // is written or the connection fails.
  struct pending_answer {
    bool& busy;
    std::atomic<int>& pending;
    pending_answer(bool& b, std::atomic<int>& p) : busy{b}, pending{p} {
      busy = true;
      ++pending;
    }
    ~pending_answer() {
      busy = false;
      --pending;
    }
  };
  auto& tcp_layer = beast::get_lowest_layer(stream);
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(http_server::k_max_body_bytes);
    beast::error_code ec;
    // The deadline covers waiting for the request (idle keep-alive included)
    // and reading it; the wait for a claim is the claim path's to bound.
    tcp_layer.expires_after(self->request_timeout_);
    co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    // A client that asks first (Expect: 100-continue, as curl does for large
    // bodies) is told to go on; an oversized body was refused already
    // (body_limit at the header), so it never sends it (RFC 9110 10.1.1).
    if (!ec && !parser.is_done() && beast::iequals(parser.get()[http::field::expect], "100-continue")) {
      http::response<http::empty_body> go_on{http::status::continue_, parser.get().version()};
      co_await http::async_write(stream, go_on, asio::redirect_error(asio::use_awaitable, ec));
    }
    if (!ec && !parser.is_done())
      co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::end_of_stream) co_return true;
    response res;
    std::optional<pending_answer> answering;
    if (ec == http::error::body_limit)
      res = body_too_large(parser.get());
    else if (auto answer = ec ? unparsable_request(ec) : std::nullopt)
      res = std::move(*answer);
    else if (ec)
      co_return false;  // timeout, reset, closed by stop(): drop the connection
    else {
      answering.emplace(busy, self->answers_pending_);
      res = co_await handle_request(parser.release(), self->services_);
    }

    if (!tcp_layer.socket().is_open()) co_return false;  // closed when the worker's grace ran out
    // Stopping: this answer is the connection's last, and says so.
    if (self->stopping_) res.keep_alive(false);
    const bool keep_alive = res.keep_alive();
    tcp_layer.expires_after(self->request_timeout_);
    co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return false;
    if (!keep_alive) co_return true;
    answering.reset();  // answered: idle from here on, for stop() and the worker's drain
    // A 503 asked the client to come back after Retry-After; the next
    // request on this connection is read no sooner. Under a flood that
    // ignores it (wrk -c4000 on a full queue), reading and turning away
    // every request at once took the thread the claims run on. (/readyz's
    // 503 asks for nothing: a probe may ask again when it likes.) The cost:
    // behind a proxy that shares this connection among its clients, the
    // next client waits that second too, while the worker is overloaded or
    // without its database.
    if (res.result() == http::status::service_unavailable && res.count(http::field::retry_after) &&
        !self->stopping_) {
      asio::steady_timer pause{co_await asio::this_coro::executor, k_retry_after};
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (self->stopping_) co_return false;  // stop() closed it, idle, during the pause
    }
  }
}

// One plain connection. The stream is shared only so stop() can close it;
// the coroutine owns it.
asio::awaitable<void> http_server::impl::run_session(std::shared_ptr<impl> self,
                                                     std::shared_ptr<beast::tcp_stream> stream, busy_flag busy) {
  if (!co_await serve_requests(self, *stream, *busy)) co_return;
  beast::error_code ignored;
  stream->socket().shutdown(tcp::socket::shutdown_send, ignored);
}

// One TLS connection: the handshake under the request deadline (a client
// that connects and says nothing is dropped like a silent plain one), the
// requests, then close_notify.
asio::awaitable<void> http_server::impl::run_tls_session(std::shared_ptr<impl> self,
                                                         std::shared_ptr<tls_stream> stream, busy_flag busy) {
  auto& tcp_layer = beast::get_lowest_layer(*stream);
  beast::error_code ec;
  tcp_layer.expires_after(self->request_timeout_);
  co_await stream->async_handshake(ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return;  // not TLS, a certificate the client refused, a timeout: drop it
  if (!co_await serve_requests(self, *stream, *busy)) co_return;
  tcp_layer.expires_after(self->request_timeout_);
  co_await stream->async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
  tcp_layer.socket().shutdown(tcp::socket::shutdown_send, ec);
}

http_server::http_server(asio::io_context& io, const std::string& listen, claim_handler on_claim,
                         readiness_probe probe, metrics& registry, bool allow_non_loopback)
    : impl_{std::make_shared<impl>(io, listen, std::move(on_claim), std::move(probe), registry,
                                   allow_non_loopback)} {}

http_server::~http_server() { stop(); }

void http_server::set_request_timeout(std::chrono::milliseconds timeout) { impl_->request_timeout_ = timeout; }

void http_server::require_bearer_token(bearer_token token) { impl_->services_.token = std::move(token); }

void http_server::use_tls(const tls_server_files& files) { impl_->tls_ = make_server_tls_context(files); }

void check_listen_address(const std::string& listen, bool non_loopback_allowed) {
  parse_listen(listen, non_loopback_allowed);
}

void http_server::start() {
  const auto address =
      parse_listen(impl_->listen_, impl_->allow_non_loopback_ || impl_->services_.token.has_value());
  const tcp::endpoint endpoint{address.host, address.port};
  auto& acceptor = impl_->acceptor_;
  beast::error_code ec;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw voucherd_error{failure_kind::transient,
                         fmt::format("--http '{}': cannot listen: {}", impl_->listen_, ec.message())};
  impl_->port_ = acceptor.local_endpoint().port();
  impl_->stopping_ = false;
  asio::co_spawn(acceptor.get_executor(), impl::accept_loop(impl_), rethrow_failure);
}

void http_server::stop() {
  impl_->stopping_ = true;
  asio::dispatch(impl_->acceptor_.get_executor(), [self = impl_] {
    beast::error_code ec;
    self->acceptor_.close(ec);
  });
  std::vector<impl::open_connection> open;
  {
    std::lock_guard lock{impl_->connections_mutex_};
    open.swap(impl_->connections_);
  }
  for (auto& connection : open) connection.close();
}

unsigned short http_server::port() const { return impl_->port_; }

int http_server::answers_pending() const { return impl_->answers_pending_; }

}  // namespace voucherd
