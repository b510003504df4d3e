#include "notify/webhook_sink.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/failure.hpp"

namespace voucherd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

http_url parse_http_url(const std::string& url) {
  constexpr std::string_view k_scheme = "http://";
  if (url.rfind("https://", 0) == 0)
    throw voucherd_error{failure_kind::usage,
                         fmt::format("webhook URL '{}': https is not supported; use http:// (e.g. to a local "
                                     "TLS-terminating proxy)",
                                     url)};
  if (url.rfind(k_scheme, 0) != 0)
    throw voucherd_error{failure_kind::usage,
                         fmt::format("webhook URL '{}': expected http://HOST[:PORT][/PATH]", url)};
  const std::string rest = url.substr(k_scheme.size());
  const auto slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  http_url out;
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

std::optional<std::string> webhook_sink::deliver(const notification& n) {
  asio::io_context io;
  tcp::resolver resolver{io};
  beast::tcp_stream stream{io};
  beast::error_code ec;
  const auto endpoints = resolver.resolve(url_.host, url_.port, ec);
  if (ec) return fmt::format("webhook: cannot resolve {}: {}", url_.host, ec.message());

  http::request<http::string_body> req{http::verb::post, url_.target, 11};
  req.set(http::field::host, url_.port == "80" ? url_.host : url_.host + ":" + url_.port);
  req.set(http::field::user_agent, "voucherd");
  req.set(http::field::content_type, "application/json");
  req.set("Idempotency-Key", n.idempotency_key);
  req.keep_alive(false);
  req.body() = boost::json::serialize(to_json(n));
  req.prepare_payload();

  http::response<http::string_body> res;
  beast::flat_buffer buffer;
  std::string failure;
  // One deadline for the whole exchange: tcp_stream applies it to every
  // operation until it is changed.
  stream.expires_after(timeout_);
  stream.async_connect(endpoints, [&](beast::error_code ec, const tcp::endpoint&) {
    if (ec) {
      failure = fmt::format("webhook: connect to {}:{}: {}", url_.host, url_.port, ec.message());
      return;
    }
    http::async_write(stream, req, [&](beast::error_code ec, std::size_t) {
      if (ec) {
        failure = fmt::format("webhook: sending the request: {}", ec.message());
        return;
      }
      http::async_read(stream, buffer, res, [&](beast::error_code ec, std::size_t) {
        if (ec) failure = fmt::format("webhook: reading the response: {}", ec.message());
      });
    });
  });
  io.run();
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  if (!failure.empty()) return failure;
  const unsigned status = res.result_int();
  if (status >= 200 && status < 300) return std::nullopt;
  std::string body = res.body().substr(0, 200);
  return fmt::format("webhook: HTTP {} {}", status, body);
}

}  // namespace voucherd
