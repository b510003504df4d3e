#include "notify/webhook_sink.hpp"

#include <type_traits>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/failure.hpp"
#include "common/tls_context.hpp"

namespace voucherd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
namespace ssl = asio::ssl;

http_url parse_http_url(const std::string& url) {
  constexpr std::string_view k_http = "http://";
  constexpr std::string_view k_https = "https://";
  http_url out;
  std::string rest;
  if (url.rfind(k_https, 0) == 0) {
    out.https = true;
    out.port = "443";
    rest = url.substr(k_https.size());
  } else if (url.rfind(k_http, 0) == 0) {
    rest = url.substr(k_http.size());
  } else {
    throw voucherd_error{failure_kind::usage,
                         fmt::format("webhook URL '{}': expected http[s]://HOST[:PORT][/PATH]", url)};
  }
  const auto slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) out.target = rest.substr(slash);
  if (authority.find('@') != std::string::npos)
    throw voucherd_error{failure_kind::usage, fmt::format("webhook URL '{}': credentials in the URL are not supported", url)};
  const auto colon = authority.rfind(':');
  const bool bracketed = !authority.empty() && authority.front() == '[';
  if (colon != std::string::npos && (!bracketed || authority[colon - 1] == ']')) {
    out.host = authority.substr(0, colon);
    out.port = authority.substr(colon + 1);
    if (out.port.empty() || out.port.size() > 5 ||
        out.port.find_first_not_of("0123456789") != std::string::npos || std::stoi(out.port) == 0 ||
        std::stoi(out.port) > 65535)
      throw voucherd_error{failure_kind::usage, fmt::format("webhook URL '{}': port must be 1..65535", url)};
  } else {
    out.host = authority;
  }
  if (bracketed && out.host.size() > 2) out.host = out.host.substr(1, out.host.size() - 2);
  if (out.host.empty()) throw voucherd_error{failure_kind::usage, fmt::format("webhook URL '{}': no host", url)};
  return out;
}

namespace {

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;

// One exchange on a fresh connection; "" when a response was read (whatever
// its status), else why not. The stream's deadline, set by the caller,
// bounds every step.
template <typename Stream>
asio::awaitable<std::string> exchange(Stream& stream, const tcp::resolver::results_type& endpoints,
                                      const http_url& url, request& req, response& res) {
  beast::error_code ec;
  co_await beast::get_lowest_layer(stream).async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return fmt::format("webhook: connect to {}:{}: {}", url.host, url.port, ec.message());
  if constexpr (std::is_same_v<Stream, tls_stream>) {
    co_await stream.async_handshake(ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, ec));
    if (ec)
      co_return fmt::format("webhook: TLS handshake with {}:{}: {}", url.host, url.port,
                            handshake_failure_text(stream.native_handle(), ec));
  }
  co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return fmt::format("webhook: sending the request: {}", ec.message());
  beast::flat_buffer buffer;
  co_await http::async_read(stream, buffer, res, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return fmt::format("webhook: reading the response: {}", ec.message());
  // The response is complete (its length is known), so a TLS connection is
  // closed without waiting for the receiver's close_notify.
  co_return std::string{};
}

}  // namespace

std::optional<std::string> webhook_sink::deliver(const notification& n) {
  asio::io_context io;
  tcp::resolver resolver{io};
  beast::error_code ec;
  const auto endpoints = resolver.resolve(url_.host, url_.port, ec);
  if (ec) return fmt::format("webhook: cannot resolve {}: {}", url_.host, ec.message());

  http::request<http::string_body> req{http::verb::post, url_.target, 11};
  const bool default_port = url_.port == (url_.https ? "443" : "80");
  req.set(http::field::host, default_port ? url_.host : url_.host + ":" + url_.port);
  req.set(http::field::user_agent, "voucherd");
  req.set(http::field::content_type, "application/json");
  req.set("Idempotency-Key", n.idempotency_key);
  req.keep_alive(false);
  req.body() = boost::json::serialize(to_json(n));
  req.prepare_payload();

  response res;
  std::string failure;
  auto finished = [&failure](std::exception_ptr error, std::string result) {
    if (error) std::rethrow_exception(error);
    failure = std::move(result);
  };
  if (url_.https) {
    if (!tls_) return "webhook: an https URL needs a TLS client context (a bug)";
    tls_stream stream{io, *tls_};
    expect_peer_name(stream.native_handle(), url_.host);
    // One deadline for the whole exchange: tcp_stream applies it to every
    // operation until it is changed.
    beast::get_lowest_layer(stream).expires_after(timeout_);
    asio::co_spawn(io, exchange(stream, endpoints, url_, req, res), finished);
    io.run();
  } else {
    beast::tcp_stream stream{io};
    stream.expires_after(timeout_);
    asio::co_spawn(io, exchange(stream, endpoints, url_, req, res), finished);
    io.run();
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  }
  if (!failure.empty()) return failure;
  const unsigned status = res.result_int();
  if (status >= 200 && status < 300) return std::nullopt;
  std::string body = res.body().substr(0, 200);
  return fmt::format("webhook: HTTP {} {}", status, body);
}

}  // namespace voucherd
