#include "claim/claim_outcome.hpp"

#include <boost/json/serialize.hpp>

#include "claim/claim_request.hpp"
#include "common/failure.hpp"

namespace voucherd {

const char* to_string(claim_status status) {
  switch (status) {
    case claim_status::claimed: return "claimed";
    case claim_status::already_claimed: return "already_claimed";
    case claim_status::sold_out: return "sold_out";
    case claim_status::rejected: return "rejected";
  }
  return "rejected";
}

std::optional<claim_status> claim_status_from(std::string_view text) {
  for (auto s : {claim_status::claimed, claim_status::already_claimed, claim_status::sold_out,
                 claim_status::rejected})
    if (text == to_string(s)) return s;
  return std::nullopt;
}

claim_outcome rejected_outcome(std::string campaign, std::string user_id, std::string reason,
                               std::string message_id) {
  claim_outcome o;
  o.status = claim_status::rejected;
  // Rejected input is echoed, but only in a form that is safe to print.
  o.campaign = printable_excerpt(campaign);
  o.user_id = printable_excerpt(user_id);
  o.reason = std::move(reason);
  o.message_id = printable_excerpt(message_id);
  return o;
}

boost::json::object to_json(const claim_outcome& o) {
  boost::json::object j;
  j["status"] = to_string(o.status);
  j["campaign"] = o.campaign;
  j["user_id"] = o.user_id;
  if (o.voucher_id) j["voucher_id"] = *o.voucher_id;
  if (!o.code.empty()) j["code"] = o.code;
  if (!o.reason.empty()) j["reason"] = o.reason;
  if (!o.message_id.empty()) j["message_id"] = o.message_id;
  return j;
}

std::string to_json_line(const claim_outcome& o) { return boost::json::serialize(to_json(o)); }

int exit_code_for(const claim_outcome& o) {
  switch (o.status) {
    case claim_status::claimed:
    case claim_status::already_claimed: return k_exit_ok;
    case claim_status::sold_out: return k_exit_sold_out;
    case claim_status::rejected: return k_exit_rejected;
  }
  return k_exit_internal;
}

}  // namespace voucherd
