#pragma once
// A throwaway certificate authority for TLS tests, made with the openssl CLI
// at test time (nothing secret is checked in): a private directory holding
// the CA's certificate and a server certificate it signed for localhost,
// 127.0.0.1 and ::1, so that a client verifying against ca_cert() accepts
// https://localhost:PORT and https://127.0.0.1:PORT. EC P-256 keys, valid for
// two days. The directory is removed with the object.
#include <string>

namespace voucherd::test {

class test_ca {
 public:
  // Throws std::runtime_error with openssl's output when a step fails.
  test_ca();
  ~test_ca();
  test_ca(const test_ca&) = delete;
  test_ca& operator=(const test_ca&) = delete;

  const std::string& dir() const { return dir_; }
  std::string ca_cert() const { return dir_ + "/ca.crt"; }          // PEM
  std::string server_cert() const { return dir_ + "/server.crt"; }  // PEM, signed by the CA
  std::string server_key() const { return dir_ + "/server.key"; }   // PEM, unencrypted

  // Issues another server certificate, <name>.crt and <name>.key in dir(),
  // for the subjectAltName entries given (e.g. "DNS:db.local,IP:10.0.0.5").
  void issue(const std::string& name, const std::string& subject_alt_names) const;

 private:
  std::string dir_;
};

}  // namespace voucherd::test
