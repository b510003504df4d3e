#pragma once
// A login of the kind README "Running it in production" tells operators to
// make: a LOGIN role that is a member of voucherd_worker (migration 0008)
// and holds nothing of its own. Roles are cluster-wide, so each test makes
// its own, under a random name, and drops it when done.
#include <random>
#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <pqxx/pqxx>

namespace voucherd::test {

// `url` (postgresql://user[:password]@host...) with its user replaced by
// `user` and no password: the password comes from PGPASSWORD, PGPASSFILE or
// a URL file, never from the URL a test hands around.
inline std::string url_as(const std::string& url, const std::string& user) {
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) throw std::invalid_argument("url_as needs a postgresql:// URL: " + url);
  const auto start = scheme + 3;
  const auto slash = url.find('/', start);
  const auto at = url.rfind('@', slash);
  const auto host = at == std::string::npos || at < start ? start : at + 1;
  return url.substr(0, start) + user + "@" + url.substr(host);
}

class worker_login {
 public:
  // admin_conninfo: a superuser connection to the cluster (any database).
  explicit worker_login(std::string admin_conninfo, const std::string& password = {})
      : admin_{std::move(admin_conninfo)} {
    static std::mt19937_64 rng{std::random_device{}()};
    name_ = fmt::format("vd_app_{:012x}", rng() & 0xffffffffffffULL);
    pqxx::connection admin{admin_};
    pqxx::nontransaction tx{admin};
    tx.exec(fmt::format("CREATE ROLE {} LOGIN{} IN ROLE voucherd_worker", tx.quote_name(name_),
                        password.empty() ? "" : " PASSWORD " + tx.quote(password)));
  }
  ~worker_login() {
    try {
      pqxx::connection admin{admin_};
      pqxx::nontransaction tx{admin};
      tx.exec("DROP ROLE IF EXISTS " + tx.quote_name(name_));
    } catch (...) {
    }
  }
  worker_login(const worker_login&) = delete;
  worker_login& operator=(const worker_login&) = delete;

  const std::string& name() const { return name_; }
  // The same database as `url`, as this login.
  std::string url_for(const std::string& url) const { return url_as(url, name_); }

 private:
  std::string admin_;
  std::string name_;
};

}  // namespace voucherd::test
