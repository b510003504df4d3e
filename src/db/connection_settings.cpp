#include "db/connection_settings.hpp"

#include <libpq-fe.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <regex>

#include <fmt/format.h>

#include "common/failure.hpp"
#include "db/libpq_support.hpp"

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

namespace {

// libpq's reason a URL does not parse, without the parts of the URL it
// quotes: those may hold the password (`missing "=" after "..."` quotes the
// rest of the string, several URI errors all of it), and a quote inside
// them makes the quoting ambiguous. So the reason is kept up to its first
// quoted text that is not one of libpq's own one-character literals ("=",
// ":", "/", "]"), and what follows is left out.
std::string without_quoted_input(const std::string& reason) {
  std::string out;
  for (std::size_t i = 0; i < reason.size(); ++i) {
    if (reason[i] != '"') {
      out += reason[i];
      continue;
    }
    if (i + 2 < reason.size() && reason[i + 2] == '"' && std::string_view{"=:/]"}.find(reason[i + 1]) != std::string_view::npos) {
      out.append(reason, i, 3);
      i += 2;
      continue;
    }
    out += "(...)";
    break;
  }
  return out;
}

// The settings a URL (or keyword string) gives, by libpq keyword.
std::map<std::string, std::string> settings_of(const std::string& url, const char* what) {
  std::map<std::string, std::string> given;
  if (url.empty()) return given;
  char* error = nullptr;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> parsed{PQconninfoParse(url.c_str(), &error),
                                                                       &PQconninfoFree};
  if (!parsed) {
    const std::string why = error ? without_quoted_input(trimmed(error)) : "out of memory";
    if (error) PQfreemem(error);
    // A set-up to fix, as an unknown host or database is (SPEC section 4).
    throw voucherd_error{failure_kind::config,
                         fmt::format("cannot read the {}: {}; expected postgresql://USER@HOST:PORT/DATABASE "
                                     "or libpq's key=value pairs",
                                     what, why)};
  }
  for (auto* o = parsed.get(); o->keyword; ++o)
    if (o->val) given[o->keyword] = o->val;
  return given;
}

std::string keyword_string(const std::map<std::string, std::string>& settings) {
  std::string out;
  for (const auto& [key, value] : settings) {
    if (!out.empty()) out += ' ';
    out += key + "=" + quoted(value);
  }
  return out;
}

}  // namespace

std::map<std::string, std::string> connection_settings::merged() const {
  std::map<std::string, std::string> given = settings_of(url, "database URL");
  // libpq's environment (PGOPTIONS, PGAPPNAME, PGCONNECT_TIMEOUT, ...)
  // stands where the URL is silent, as it would without us: writing our
  // defaults into the string would otherwise override it.
  {
    std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> defaults{PQconndefaults(), &PQconninfoFree};
    for (auto* o = defaults.get(); o && o->keyword; ++o) {
      const std::string key = o->keyword;
      if (o->val && o->envvar && std::getenv(o->envvar) &&
          (key == "options" || key == "application_name" || key == "connect_timeout" || key.starts_with("keepalives")))
        given.try_emplace(key, o->val);
    }
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
  // so that its -c settings win. A pooler refuses them: a pooled connection
  // sets them per transaction (transaction_pooling).
  if (pooled) return settings;
  std::string options = fmt::format("-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
                                    statement_timeout.count(), lock_timeout.count(),
                                    idle_in_transaction_timeout.count());
  if (auto it = given.find("options"); it != given.end() && !it->second.empty()) options += " " + it->second;
  settings["options"] = options;
  return settings;
}

std::string connection_settings::listen_conninfo() const {
  if (!pooled) return conninfo();
  if (listen_url.empty()) return "";
  // listen_url's settings over the main URL's: typically only host and port
  // differ, and the database, user and password stay those of the URL.
  auto settings = settings_of(url, "database URL");
  for (auto& [key, value] : settings_of(listen_url, "listen URL")) settings[key] = value;
  auto direct = *this;
  direct.url = keyword_string(settings);
  direct.pooled = false;
  return direct.conninfo();
}

transaction_pooling transaction_pooling::of(const connection_settings& s) {
  if (!s.pooled) return {};
  return {true, s.statement_timeout, s.lock_timeout, s.idle_in_transaction_timeout, s.listen_conninfo()};
}

std::vector<std::string> transaction_pooling::bounds() const {
  return {std::to_string(statement_timeout.count()), std::to_string(lock_timeout.count()),
          std::to_string(idle_in_transaction_timeout.count())};
}

std::string connection_settings::conninfo() const { return keyword_string(merged()); }

namespace {

// The statement_timeout the server will apply: the last -c setting of the
// options (ours come first; the URL's or PGOPTIONS' later ones win), read
// as Postgres reads a time setting: a number, a fraction allowed, and a unit
// (us, ms, s, min, h, d; milliseconds when none), rounded to whole
// milliseconds. nullopt when absent; a value past the server's int range is
// skipped (the server refuses it, and with it the connection).
std::optional<std::chrono::milliseconds> statement_timeout_of(const std::string& options) {
  static const std::regex k_setting{
      R"(statement_timeout\s*=\s*'?([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*(us|ms|min|s|h|d)?)"};
  std::optional<std::chrono::milliseconds> last;
  for (auto it = std::sregex_iterator(options.begin(), options.end(), k_setting); it != std::sregex_iterator(); ++it) {
    const std::string unit = (*it)[2].str();
    const double factor = unit == "us"    ? 0.001
                          : unit == "s"   ? 1e3
                          : unit == "min" ? 6e4
                          : unit == "h"   ? 3.6e6
                          : unit == "d"   ? 8.64e7
                                          : 1.0;
    const double ms = std::round(std::strtod((*it)[1].str().c_str(), nullptr) * factor);
    if (!(ms <= std::numeric_limits<int>::max())) continue;
    last = std::chrono::milliseconds{static_cast<long long>(ms)};
  }
  return last;
}

}  // namespace

std::chrono::milliseconds connection_settings::reply_deadline() const {
  const auto settings = merged();
  const auto it = settings.find("options");
  const auto effective = statement_timeout_of(it == settings.end() ? std::string{} : it->second);
  const auto timeout = effective.value_or(statement_timeout);
  if (timeout.count() <= 0) return std::chrono::milliseconds{0};
  return timeout + k_reply_margin;
}

}  // namespace voucherd
