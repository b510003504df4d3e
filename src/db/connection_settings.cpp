#include "db/connection_settings.hpp"

#include <libpq-fe.h>

#include <map>
#include <memory>

#include <fmt/format.h>

#include "common/failure.hpp"

namespace voucherd {

namespace {

std::string quoted(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  out += '\'';
  return out;
}

// libpq's timeouts are whole seconds; round up so a bound is never shorter.
std::string whole_seconds(std::chrono::milliseconds d) { return std::to_string((d.count() + 999) / 1000); }

}  // namespace

std::string connection_settings::conninfo() const {
  std::map<std::string, std::string> given;
  if (!url.empty()) {
    char* error = nullptr;
    std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> parsed{PQconninfoParse(url.c_str(), &error),
                                                                         &PQconninfoFree};
    if (!parsed) {
      std::string why = error ? error : "out of memory";
      if (error) PQfreemem(error);
      while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
      throw voucherd_error{failure_kind::usage, fmt::format("cannot read the database URL: {}", why)};
    }
    for (auto* o = parsed.get(); o->keyword; ++o)
      if (o->val) given[o->keyword] = o->val;
  }
  auto settings = given;
  auto fallback = [&](const char* key, std::string value) { settings.try_emplace(key, std::move(value)); };
  fallback("application_name", application_name);
  if (connect_timeout.count() > 0) fallback("connect_timeout", whole_seconds(connect_timeout));
  fallback("keepalives", "1");
  fallback("keepalives_idle", std::to_string(k_keepalives_idle_s));
  fallback("keepalives_interval", std::to_string(k_keepalives_interval_s));
  fallback("keepalives_count", std::to_string(k_keepalives_count));
  // Server-side bounds as startup options; the URL's own options come last
  // so that its -c settings win.
  std::string options = fmt::format("-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
                                    statement_timeout.count(), lock_timeout.count(),
                                    idle_in_transaction_timeout.count());
  if (auto it = given.find("options"); it != given.end() && !it->second.empty()) options += " " + it->second;
  settings["options"] = options;
  std::string out;
  for (const auto& [key, value] : settings) {
    if (!out.empty()) out += ' ';
    out += key + "=" + quoted(value);
  }
  return out;
}

std::chrono::milliseconds connection_settings::reply_deadline() const {
  if (statement_timeout.count() <= 0) return std::chrono::milliseconds{0};
  return statement_timeout + k_reply_margin;
}

}  // namespace voucherd
