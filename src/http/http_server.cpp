// The HTTP surface, in the shape of Beast's small server examples: a listener
// that accepts, a session per connection with do_x/on_x steps on its own
// strand and one deadline per request, and pure functions that route a
// request and build a response.
#include "http/http_server.hpp"
#include "db/classify.hpp"

#include <mutex>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/version.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

namespace voucherd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

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
    }
  }
  return 500;  // a handler that answered nothing is a bug
}

namespace {

constexpr const char* k_json = "application/json";
constexpr const char* k_prometheus = "text/plain; version=0.0.4; charset=utf-8";

enum class route { claims, healthz, readyz, metrics, not_found, method_not_allowed };

// Pure: which endpoint a request is for.
route route_of(const request& req) {
  const auto target = req.target();
  const auto path = target.substr(0, target.find('?'));
  const auto method = req.method();
  auto only = [&](http::verb allowed, route r) {
    return method == allowed || (allowed == http::verb::get && method == http::verb::head)
               ? r
               : route::method_not_allowed;
  };
  if (path == "/v1/claims") return only(http::verb::post, route::claims);
  if (path == "/healthz") return only(http::verb::get, route::healthz);
  if (path == "/readyz") return only(http::verb::get, route::readyz);
  if (path == "/metrics") return only(http::verb::get, route::metrics);
  return route::not_found;
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

response claim_response(const request& req, const claim_reply& reply) {
  const unsigned status = http_status_for(reply);
  if (reply.outcome) return make_response(req, status, k_json, to_json_line(*reply.outcome));
  const char* error = reply.malformed ? "malformed" : reply.failure ? to_string(*reply.failure) : "internal";
  auto res = make_response(req, status, k_json, error_body(error, reply.error));
  if (status == 503) res.set(http::field::retry_after, "1");
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
                         fmt::format("--http '{}': refusing to listen on a non-loopback address; the claim "
                                     "endpoint has no authentication (use 127.0.0.1 or ::1)",
                                     listen)};
  return out;
}

}  // namespace

// One connection: read a request, answer it, repeat while keep-alive.
class http_session : public std::enable_shared_from_this<http_session> {
 public:
  http_session(tcp::socket&& socket, std::shared_ptr<http_server::impl> server)
      : stream_{std::move(socket)}, server_{std::move(server)} {}

  void run() {
    asio::dispatch(stream_.get_executor(), beast::bind_front_handler(&http_session::do_read, shared_from_this()));
  }

  // From any thread: closes the connection (an in-flight claim still completes,
  // its answer is just not sent).
  void close() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
      beast::error_code ec;
      self->stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
      self->stream_.close();
    });
  }

 private:
  void do_read();
  void on_read(beast::error_code ec, std::size_t);
  void answer(response res);
  void on_write(bool keep_alive, beast::error_code ec, std::size_t);
  void do_close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<response> pending_;
  std::shared_ptr<http_server::impl> server_;
};

struct http_server::impl : std::enable_shared_from_this<http_server::impl> {
  impl(asio::io_context& io, std::string listen, claim_handler on_claim, readiness_probe probe,
       metrics& registry, bool allow_non_loopback)
      : io_{io},
        acceptor_{asio::make_strand(io)},
        listen_{std::move(listen)},
        on_claim_{std::move(on_claim)},
        probe_{std::move(probe)},
        metrics_{registry},
        allow_non_loopback_{allow_non_loopback} {}

  void do_accept() {
    acceptor_.async_accept(asio::make_strand(io_),
                           beast::bind_front_handler(&impl::on_accept, shared_from_this()));
  }

  void on_accept(beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      auto session = std::make_shared<http_session>(std::move(socket), shared_from_this());
      {
        std::lock_guard lock{sessions_mutex_};
        std::erase_if(sessions_, [](const auto& w) { return w.expired(); });
        sessions_.push_back(session);
      }
      session->run();
    }
    do_accept();
  }

  asio::io_context& io_;
  tcp::acceptor acceptor_;
  std::string listen_;
  claim_handler on_claim_;
  readiness_probe probe_;
  metrics& metrics_;
  bool allow_non_loopback_;
  std::chrono::milliseconds request_timeout_ = http_server::k_request_timeout;
  std::atomic<unsigned short> port_{0};
  std::mutex sessions_mutex_;
  std::vector<std::weak_ptr<http_session>> sessions_;
};

void http_session::do_read() {
  parser_.emplace();
  parser_->body_limit(http_server::k_max_body_bytes);
  stream_.expires_after(server_->request_timeout_);
  http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&http_session::on_read, shared_from_this()));
}

void http_session::on_read(beast::error_code ec, std::size_t) {
  if (ec == http::error::end_of_stream) return do_close();
  if (ec == http::error::body_limit) {
    // The body is not read, so the connection cannot be reused: answer and close.
    request head = parser_->get();
    head.keep_alive(false);
    return answer(make_response(
        head, 413, k_json,
        error_body("malformed", fmt::format("request body exceeds {} bytes", http_server::k_max_body_bytes))));
  }
  if (ec) return;  // timeout, reset, garbage: drop the connection

  request req = parser_->release();
  switch (route_of(req)) {
    case route::healthz: return answer(make_response(req, 200, k_json, R"({"status":"ok"})"));
    case route::metrics:
      return answer(make_response(req, 200, k_prometheus, server_->metrics_.prometheus_text()));
    case route::not_found: return answer(make_response(req, 404, k_json, error_body("not_found", req.target())));
    case route::method_not_allowed:
      return answer(make_response(req, 405, k_json, error_body("method_not_allowed", req.method_string())));
    case route::readyz: {
      if (!server_->probe_) return answer(make_response(req, 200, k_json, R"({"ready":true})"));
      auto shared_req = std::make_shared<request>(std::move(req));
      server_->probe_([self = shared_from_this(), shared_req](bool ready) {
        asio::dispatch(self->stream_.get_executor(), [self, shared_req, ready] {
          self->answer(make_response(*shared_req, ready ? 200 : 503, k_json,
                                     ready ? R"({"ready":true})" : R"({"ready":false})"));
        });
      });
      return;
    }
    case route::claims: {
      auto shared_req = std::make_shared<request>(std::move(req));
      std::string body = std::move(shared_req->body());
      auto done = [self = shared_from_this(), shared_req](claim_reply reply) {
        asio::dispatch(self->stream_.get_executor(), [self, shared_req, reply = std::move(reply)] {
          self->answer(claim_response(*shared_req, reply));
        });
      };
      try {
        server_->on_claim_(std::move(body), std::move(done));
      } catch (const std::exception& e) {
        // The handler threw instead of answering: still one answer per request.
        claim_reply reply;
        reply.failure = classify(e);
        reply.error = e.what();
        answer(claim_response(*shared_req, reply));
      }
      return;
    }
  }
}

void http_session::answer(response res) {
  if (!stream_.socket().is_open()) return;  // closed by stop() while the claim ran
  pending_ = std::make_shared<response>(std::move(res));
  const bool keep_alive = pending_->keep_alive();
  stream_.expires_after(server_->request_timeout_);
  http::async_write(stream_, *pending_,
                    beast::bind_front_handler(&http_session::on_write, shared_from_this(), keep_alive));
}

void http_session::on_write(bool keep_alive, beast::error_code ec, std::size_t) {
  pending_.reset();
  if (ec) return;
  if (!keep_alive) return do_close();
  do_read();
}

http_server::http_server(asio::io_context& io, const std::string& listen, claim_handler on_claim,
                         readiness_probe probe, metrics& registry, bool allow_non_loopback)
    : impl_{std::make_shared<impl>(io, listen, std::move(on_claim), std::move(probe), registry,
                                   allow_non_loopback)} {}

http_server::~http_server() { stop(); }

void http_server::set_request_timeout(std::chrono::milliseconds timeout) { impl_->request_timeout_ = timeout; }

void http_server::start() {
  const auto address = parse_listen(impl_->listen_, impl_->allow_non_loopback_);
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
  asio::dispatch(acceptor.get_executor(), [self = impl_] { self->do_accept(); });
}

void http_server::stop() {
  asio::dispatch(impl_->acceptor_.get_executor(), [self = impl_] {
    beast::error_code ec;
    self->acceptor_.close(ec);
  });
  std::vector<std::shared_ptr<http_session>> open;
  {
    std::lock_guard lock{impl_->sessions_mutex_};
    for (auto& w : impl_->sessions_)
      if (auto s = w.lock()) open.push_back(std::move(s));
    impl_->sessions_.clear();
  }
  for (auto& s : open) s->close();
}

unsigned short http_server::port() const { return impl_->port_; }

}  // namespace voucherd
