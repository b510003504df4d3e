#pragma once
// The two TLS set-ups voucherd uses, on Asio's OpenSSL binding: a server
// context for `worker --http` with --http-tls-cert/--http-tls-key, and a
// client context for https:// webhooks. Both speak TLS 1.2 or newer only.
//
// A file that cannot be read or does not hold what it should (no
// certificate, no key, a key that does not match the certificate) throws
// voucherd_error(config) naming the file and what OpenSSL said: a deployment
// mistake, refused at start-up before anything listens.
#include <memory>
#include <string>

#include <boost/asio/ssl/context.hpp>

namespace voucherd {

struct tls_server_files {
  std::string cert_file;  // PEM: the certificate, then any intermediates
  std::string key_file;   // PEM: the private key (unencrypted)
};

// A server context serving cert_file's chain with key_file.
std::shared_ptr<boost::asio::ssl::context> make_server_tls_context(const tls_server_files& files);

// A client context that verifies the peer's certificate against the system
// trust store (/etc/ssl/certs, via OpenSSL's default paths) and, when
// ca_file is not empty, also against the PEM certificates in ca_file (a
// private CA). The host name is checked per connection (see webhook_sink).
std::shared_ptr<boost::asio::ssl::context> make_client_tls_context(const std::string& ca_file);

// Before a client handshake on ssl: send host as SNI (unless it is an IP
// address, which SNI may not carry) and require the peer's certificate to
// name it (a DNS name, wildcards per RFC 6125, or an IP address).
void expect_peer_name(SSL* ssl, const std::string& host);

// Why a client handshake failed, for a log or a stored last_error: the
// certificate check's verdict when that was the cause ("certificate verify
// failed: unable to get local issuer certificate"), else ec's message.
std::string handshake_failure_text(SSL* ssl, const boost::system::error_code& ec);

// The last OpenSSL error of this thread as text ("" when none), consumed.
std::string openssl_error_text();

}  // namespace voucherd
