#pragma once
// A webhook receiver for the notification tests: a real HTTP server on
// 127.0.0.1 (port chosen by the kernel) that records every request and
// answers what a policy says, one thread per connection. Given a certificate
// and key it serves HTTPS instead (url() is then https://localhost:PORT/hook,
// so that the client's host-name check has a name to check) and counts the
// handshakes that failed, e.g. because the client refused its certificate.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <fmt/format.h>

namespace voucherd::test {

class webhook_receiver {
 public:
  struct request_seen {
    std::string header_key;  // the Idempotency-Key header
    boost::json::object body;
    unsigned status = 0;  // what the receiver decided (it counts as received even if the answer came too late)
  };
  struct answer {
    unsigned status = 200;
    std::chrono::milliseconds delay{0};  // before answering: longer than the sink's timeout = a lost answer
  };
  // Decides each request's answer from its key and how often the key was seen
  // before (0-based). Called under the receiver's lock, so it may keep state.
  using policy = std::function<answer(const std::string& key, int seen_before)>;

  explicit webhook_receiver(policy p)
      : policy_{std::move(p)}, acceptor_{io_, {boost::asio::ip::make_address("127.0.0.1"), 0}} {
    thread_ = std::thread{[this] { serve(); }};
  }
  // HTTPS with this PEM certificate chain and key.
  webhook_receiver(policy p, const std::string& cert_file, const std::string& key_file)
      : policy_{std::move(p)},
        tls_{std::make_unique<boost::asio::ssl::context>(boost::asio::ssl::context::tls_server)},
        acceptor_{io_, {boost::asio::ip::make_address("127.0.0.1"), 0}} {
    tls_->use_certificate_chain_file(cert_file);
    tls_->use_private_key_file(key_file, boost::asio::ssl::context::pem);
    thread_ = std::thread{[this] { serve(); }};
  }
  ~webhook_receiver() {
    stopping_ = true;
    boost::system::error_code ec;
    boost::asio::ip::tcp::socket wake{io_};
    wake.connect(acceptor_.local_endpoint(), ec);  // unblocks accept()
    thread_.join();
    for (auto& t : connections_) t.join();
  }

  std::string url() const {
    return tls_ ? fmt::format("https://localhost:{}/hook", acceptor_.local_endpoint().port())
                : fmt::format("http://127.0.0.1:{}/hook", acceptor_.local_endpoint().port());
  }
  // HTTPS: connections whose TLS handshake failed (no request was read on them).
  int failed_handshakes() const { return failed_handshakes_; }

  std::vector<request_seen> requests() const {
    std::lock_guard lock{mutex_};
    return requests_;
  }
  // Waits until pred(requests) holds or the deadline passes.
  bool wait_until(const std::function<bool(const std::vector<request_seen>&)>& pred,
                  std::chrono::seconds deadline = std::chrono::seconds{20}) {
    std::unique_lock lock{mutex_};
    return changed_.wait_for(lock, deadline, [&] { return pred(requests_); });
  }

 private:
  void serve() {
    while (!stopping_) {
      boost::asio::ip::tcp::socket socket{io_};
      boost::system::error_code ec;
      acceptor_.accept(socket, ec);
      if (ec || stopping_) continue;
      connections_.emplace_back([this, s = std::move(socket)]() mutable { handle(std::move(s)); });
    }
  }

  void handle(boost::asio::ip::tcp::socket socket) {
    if (!tls_) return exchange(socket);
    boost::asio::ssl::stream<boost::asio::ip::tcp::socket&> stream{socket, *tls_};
    boost::system::error_code ec;
    stream.handshake(boost::asio::ssl::stream_base::server, ec);
    if (ec) {
      ++failed_handshakes_;
      return;
    }
    exchange(stream);
  }

  template <typename Stream>
  void exchange(Stream& socket) {
    namespace http = boost::beast::http;
    boost::system::error_code ec;
    boost::beast::flat_buffer buffer;
    http::request<http::string_body> req;
    http::read(socket, buffer, req, ec);
    if (ec) return;
    request_seen seen;
    seen.header_key = std::string{req["Idempotency-Key"]};
    seen.body = boost::json::parse(req.body()).as_object();
    answer decision;
    {
      std::lock_guard lock{mutex_};
      decision = policy_(seen.header_key, seen_[seen.header_key]++);
      seen.status = decision.status;
      requests_.push_back(seen);
    }
    changed_.notify_all();
    if (decision.delay.count() > 0) std::this_thread::sleep_for(decision.delay);  // simulates a slow receiver
    http::response<http::string_body> res{static_cast<http::status>(decision.status), 11};
    res.body() = decision.status < 300 ? "ok" : "try again";
    res.keep_alive(false);
    res.prepare_payload();
    http::write(socket, res, ec);
  }

  policy policy_;
  std::unique_ptr<boost::asio::ssl::context> tls_;  // null: plain HTTP
  std::atomic<int> failed_handshakes_{0};
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::thread thread_;
  std::vector<std::thread> connections_;  // only the accept thread touches it until the destructor
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, int> seen_;
  std::vector<request_seen> requests_;
};

}  // namespace voucherd::test
