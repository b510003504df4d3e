#include "common/failure.hpp"

namespace voucherd {

int exit_code_for(failure_kind kind) {
  switch (kind) {
    case failure_kind::usage: return k_exit_usage;
    case failure_kind::rejected: return k_exit_rejected;
    case failure_kind::transient: return k_exit_transient;
    case failure_kind::internal: return k_exit_internal;
    case failure_kind::config: return k_exit_config;
  }
  return k_exit_internal;
}

const char* to_string(failure_kind kind) {
  switch (kind) {
    case failure_kind::usage: return "usage";
    case failure_kind::rejected: return "rejected";
    case failure_kind::transient: return "transient";
    case failure_kind::internal: return "internal";
    case failure_kind::config: return "config";
  }
  return "internal";
}

failure_kind classify_sqlstate(const std::string& s) {
  if (s.size() != 5) return failure_kind::internal;
  const std::string cls = s.substr(0, 2);
  if (cls == "08" || cls == "40" || cls == "53" || cls == "57" || cls == "58" || s == "55P03")
    return failure_kind::transient;
  if (cls == "22" || cls == "23" || s == "P0001") return failure_kind::rejected;
  if (cls == "28" || s == "3D000" || s == "3F000" || s == "42P01" || s == "42883" || s == "42501")
    return failure_kind::config;
  return failure_kind::internal;
}

failure_kind classify_connect_failure(const std::string& m) {
  // Checked before the config patterns: a server on its way up or down may
  // word its refusal like a missing database ("the database system is
  // starting up").
  for (const char* passing : {"the database system is", "SSL SYSCALL", "Connection refused", "timed out", "timeout expired",
                              "too many clients", "remaining connection slots", "server closed the connection",
                              "No route to host", "Network is unreachable"})
    if (m.find(passing) != std::string::npos) return failure_kind::transient;
  for (const char* setup : {"does not exist", "authentication failed", "no pg_hba.conf entry", "password",
                            "invalid", "certificate", "SSL", "sslmode", "not permitted to log in",
                            "permission denied", "could not translate host name", "unsupported",
                            // a setting in the URL's options or PGOPTIONS the server refuses
                            "unrecognized configuration parameter", "cannot be changed"})
    if (m.find(setup) != std::string::npos) return failure_kind::config;
  return failure_kind::transient;
}

std::string config_hint(const std::string& sqlstate, const std::string& message) {
  if (sqlstate == "42P01" || sqlstate == "42883" || sqlstate == "3F000")
    return "the schema is missing or older than this voucherd: run `voucherd migrate` as the schema owner";
  if (sqlstate == "42501")
    return "the role lacks a privilege voucherd needs: see \"Running it in production\" in the README for the grants";
  if (sqlstate == "3D000" || (message.find("database \"") != std::string::npos && message.find("does not exist") != std::string::npos))
    return "check the database name in the URL (create it, then run `voucherd migrate`)";
  if (sqlstate.starts_with("28") || message.find("authentication") != std::string::npos ||
      message.find("role") != std::string::npos || message.find("pg_hba") != std::string::npos)
    return "check the role and its password (PGPASSWORD, PGPASSFILE or --database-url-file) and pg_hba.conf";
  if (message.find("configuration parameter") != std::string::npos || message.find("for parameter") != std::string::npos ||
      message.find("cannot be changed") != std::string::npos)
    return "check the -c settings in the URL's options and in PGOPTIONS";
  if ((message.find("certificate") != std::string::npos || message.find("SSL") != std::string::npos) &&
      message.find("database") != std::string::npos)
    return "check sslmode, sslrootcert and the server's certificate";
  return {};
}

bool retry_at_once(const std::string& sqlstate, const std::string& constraint) {
  return sqlstate == "40001" || sqlstate == "40P01" ||
         (sqlstate == "23505" && (constraint == k_owner_constraint || constraint == k_outcome_constraint));
}

bool refuses_message(const std::string& sqlstate, const std::string& constraint) {
  return classify_sqlstate(sqlstate) == failure_kind::rejected && !retry_at_once(sqlstate, constraint);
}

bool is_timeout(const std::string& sqlstate) { return sqlstate == "57014" || sqlstate == "55P03"; }

}  // namespace voucherd
