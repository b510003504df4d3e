#include "support/http_client.hpp"

#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include "support/files.hpp"
#include "support/test_db.hpp"
#include "support/wait.hpp"

namespace voucherd::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

http_reply http_call(unsigned short port, http::verb verb, const std::string& target, const std::string& body,
                     std::chrono::seconds deadline, const http_headers& headers) {
  try {
    asio::io_context io;
    beast::tcp_stream stream{io};
    stream.connect(asio::ip::tcp::endpoint{asio::ip::make_address("127.0.0.1"), port});
    // tcp_stream's own timer only bounds asynchronous calls: the deadline of
    // these blocking ones is the socket's.
    const timeval tv{static_cast<time_t>(deadline.count()), 0};
    ::setsockopt(stream.socket().native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(stream.socket().native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    if (verb == http::verb::post) req.set(http::field::content_type, "application/json");
    for (const auto& [name, value] : headers) req.set(name, value);
    req.body() = body;
    req.prepare_payload();
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    return {res.result_int(), res.body(), std::string{res[http::field::content_type]},
            std::string{res[http::field::www_authenticate]}, {}, std::string{res[http::field::retry_after]}};
  } catch (const std::exception& e) {
    return {0, {}, {}, {}, e.what(), {}};
  }
}

std::optional<unsigned short> http_port_in(const std::string& log) {
  for (const auto& line : lines_of(log)) {
    if (line.find("http listening") == std::string::npos) continue;
    boost::system::error_code ec;
    const auto j = boost::json::parse(line, ec);
    if (ec || !j.is_object()) continue;
    if (const auto* port = j.as_object().if_contains("port"); port && port->is_int64())
      return static_cast<unsigned short>(port->as_int64());
  }
  return std::nullopt;
}

std::optional<unsigned short> wait_for_http_port(const std::function<std::string()>& log,
                                                 const std::function<bool()>& running,
                                                 std::chrono::milliseconds timeout) {
  std::optional<unsigned short> port;
  wait_until([&] { return (port = http_port_in(log())).has_value() || !running(); }, timeout);
  return port ? port : http_port_in(log());
}

std::optional<unsigned short> wait_for_http_port(const std::string& log_path, int pid,
                                                 std::chrono::milliseconds timeout) {
  return wait_for_http_port([&] { return read_file(log_path); }, [pid] { return still_running(pid); }, timeout);
}

}  // namespace voucherd::test
