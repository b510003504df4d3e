#include "common/tls_context.hpp"

#include <fstream>

#include <boost/asio/ip/address.hpp>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <fmt/format.h>

#include "common/failure.hpp"

namespace voucherd {

namespace ssl = boost::asio::ssl;

namespace {

// Opening the file first tells "cannot read" (a path or permission mistake)
// apart from "not a certificate" (the wrong file), which OpenSSL alone
// reports alike.
void require_readable(const std::string& path, const char* what) {
  if (!std::ifstream{path})
    throw voucherd_error{failure_kind::config, fmt::format("cannot read the {} file {}", what, path)};
}

[[noreturn]] void refuse(const std::string& path, const char* what, const boost::system::error_code& ec) {
  std::string detail = openssl_error_text();
  if (detail.empty()) detail = ec.message();
  throw voucherd_error{failure_kind::config, fmt::format("the {} file {} is not usable: {}", what, path, detail)};
}

}  // namespace

std::string openssl_error_text() {
  unsigned long last = 0;
  while (const unsigned long e = ERR_get_error()) last = e;
  if (last == 0) return {};
  char text[256];
  ERR_error_string_n(last, text, sizeof text);
  return text;
}

std::shared_ptr<ssl::context> make_server_tls_context(const tls_server_files& files) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  boost::system::error_code ec;
  require_readable(files.cert_file, "TLS certificate");
  require_readable(files.key_file, "TLS key");
  ERR_clear_error();
  ctx->use_certificate_chain_file(files.cert_file, ec);
  if (ec) refuse(files.cert_file, "TLS certificate", ec);
  ctx->use_private_key_file(files.key_file, ssl::context::pem, ec);
  if (ec) refuse(files.key_file, "TLS key", ec);
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
    throw voucherd_error{failure_kind::config,
                         fmt::format("the TLS key {} does not match the certificate {}: {}", files.key_file,
                                     files.cert_file, openssl_error_text())};
  return ctx;
}

std::shared_ptr<ssl::context> make_client_tls_context(const std::string& ca_file) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  ctx->set_verify_mode(ssl::verify_peer);
  boost::system::error_code ec;
  ERR_clear_error();
  // No trust store installed (a bare image without ca-certificates) is not
  // an error here: a private CA may be all that is needed, and a public
  // receiver then fails its deliveries with "unable to get local issuer".
  ctx->set_default_verify_paths(ec);
  ERR_clear_error();
  if (!ca_file.empty()) {
    require_readable(ca_file, "CA certificate");
    ctx->load_verify_file(ca_file, ec);
    if (ec) refuse(ca_file, "CA certificate", ec);
  }
  return ctx;
}

void expect_peer_name(SSL* ssl, const std::string& host) {
  boost::system::error_code ec;
  boost::asio::ip::make_address(host, ec);
  const bool ip_literal = !ec;
  if (ip_literal) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl, host.c_str());
    SSL_set1_host(ssl, host.c_str());
  }
}

std::string handshake_failure_text(SSL* ssl, const boost::system::error_code& ec) {
  const long verdict = SSL_get_verify_result(ssl);
  if (verdict != X509_V_OK)
    return fmt::format("certificate verify failed: {}", X509_verify_cert_error_string(verdict));
  std::string detail = openssl_error_text();
  return detail.empty() ? ec.message() : detail;
}

}  // namespace voucherd
