#include "support/test_ca.hpp"

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <fmt/format.h>

#include "support/files.hpp"
#include "support/run_program.hpp"

namespace voucherd::test {

namespace {

void openssl(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto r = run_program(argv);
  if (r.exit_code != 0)
    throw std::runtime_error(fmt::format("openssl {} failed ({}): {}{}", args.at(0), r.exit_code, r.out, r.err));
}

}  // namespace

test_ca::test_ca() : dir_{temp_path("test-ca")} {
  std::filesystem::create_directories(dir_);
  std::filesystem::permissions(dir_, std::filesystem::perms::owner_all);
  openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
           dir_ + "/ca.key", "-out", ca_cert(), "-days", "2", "-subj", "/CN=voucherd test CA", "-addext",
           "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
  issue("server", "DNS:localhost,IP:127.0.0.1,IP:::1");
}

test_ca::~test_ca() {
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

void test_ca::issue(const std::string& name, const std::string& subject_alt_names) const {
  const std::string base = dir_ + "/" + name;
  {
    std::ofstream ext{base + ".ext"};
    ext << "subjectAltName=" << subject_alt_names << "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
  }
  openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", base + ".key", "-out",
           base + ".csr", "-subj", "/CN=" + name});
  openssl({"x509", "-req", "-in", base + ".csr", "-CA", ca_cert(), "-CAkey", dir_ + "/ca.key", "-CAcreateserial",
           "-out", base + ".crt", "-days", "2", "-extfile", base + ".ext"});
}

}  // namespace voucherd::test
