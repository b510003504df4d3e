#pragma once
// The tests' HTTP client for `voucherd worker --http`: one request on a fresh
// connection to 127.0.0.1, blocking, with a deadline on every read and write,
// and the worker's port read from its "http listening" log line.
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/beast/http/verb.hpp>

namespace voucherd::test {

struct http_reply {
  unsigned status = 0;       // 0: no answer; `error` says why
  std::string body;
  std::string content_type;
  std::string www_authenticate;  // the WWW-Authenticate header of a 401
  std::string error;         // the client's own failure (refused, reset, deadline)
  std::string retry_after;   // the Retry-After header (a 503's)
};

// How long a request may take before it counts as unanswered: far beyond
// any claim's own bounds, so it only ends a test that would hang.
inline constexpr std::chrono::seconds k_http_deadline{90};

// Extra request headers, e.g. {{"Authorization", "Bearer ..."}}.
using http_headers = std::vector<std::pair<std::string, std::string>>;

// One request; never throws (a failure is a reply with status 0).
http_reply http_call(unsigned short port, boost::beast::http::verb verb, const std::string& target,
                     const std::string& body = {}, std::chrono::seconds deadline = k_http_deadline,
                     const http_headers& headers = {});

// POST /v1/claims with one message as the body.
inline http_reply post_claim(unsigned short port, const std::string& message) {
  return http_call(port, boost::beast::http::verb::post, "/v1/claims", message);
}

// The port of the "http listening" line in a worker's log (its stderr), if
// the line is there yet.
std::optional<unsigned short> http_port_in(const std::string& log);

// Waits for that line; nullopt when `running` says the worker ended first or
// `timeout` passed.
std::optional<unsigned short> wait_for_http_port(const std::function<std::string()>& log,
                                                 const std::function<bool()>& running,
                                                 std::chrono::milliseconds timeout);
// The same for a worker started with spawn_voucherd, its stderr in `log_path`.
std::optional<unsigned short> wait_for_http_port(const std::string& log_path, int pid,
                                                 std::chrono::milliseconds timeout);

}  // namespace voucherd::test
