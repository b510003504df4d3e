#include "common/failure.hpp"

namespace voucherd {

int exit_code_for(failure_kind kind) {
  switch (kind) {
    case failure_kind::usage: return k_exit_usage;
    case failure_kind::rejected: return k_exit_rejected;
    case failure_kind::transient: return k_exit_transient;
    case failure_kind::internal: return k_exit_internal;
  }
  return k_exit_internal;
}

const char* to_string(failure_kind kind) {
  switch (kind) {
    case failure_kind::usage: return "usage";
    case failure_kind::rejected: return "rejected";
    case failure_kind::transient: return "transient";
    case failure_kind::internal: return "internal";
  }
  return "internal";
}

failure_kind classify_sqlstate(const std::string& s) {
  if (s.size() != 5) return failure_kind::internal;
  const std::string cls = s.substr(0, 2);
  if (cls == "08" || cls == "40" || cls == "53" || cls == "57" || cls == "58" || s == "55P03")
    return failure_kind::transient;
  if (cls == "22" || cls == "23" || s == "P0001") return failure_kind::rejected;
  return failure_kind::internal;
}

bool retry_at_once(const std::string& sqlstate, const std::string& constraint) {
  return sqlstate == "40001" || sqlstate == "40P01" || (sqlstate == "23505" && constraint == k_owner_constraint);
}

bool refuses_message(const std::string& sqlstate, const std::string& constraint) {
  return classify_sqlstate(sqlstate) == failure_kind::rejected && !retry_at_once(sqlstate, constraint);
}

bool is_timeout(const std::string& sqlstate) { return sqlstate == "57014" || sqlstate == "55P03"; }

}  // namespace voucherd
