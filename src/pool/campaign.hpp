#pragma once
// Campaigns: creation and the numbers `voucherd stats` prints.
#include <cstdint>
#include <string>

#include <boost/json/object.hpp>
#include <pqxx/connection>

namespace voucherd {

struct campaign_spec {
  std::string name;
  std::string starts_at;  // '' for none; any timestamp Postgres accepts
  std::string ends_at;
};

// Returns the created campaign as JSON ({"status":"created","campaign":...}).
// Throws voucherd_error(rejected) for a bad name, a bad or inverted window,
// or a name that exists already.
boost::json::object create_campaign(pqxx::connection& conn, const campaign_spec& spec);

// {"campaign":..., "total":..., "claimed":..., "free":..., "outbox_pending":...,
//  "outbox_sent":..., "outbox_failed":..., "queue_pending":..., "dead_letters":...}
// Throws voucherd_error(rejected) for an unknown campaign.
boost::json::object campaign_stats(pqxx::connection& conn, const std::string& name);

// The id of a campaign locked for an import (see sql/campaign_lock.sql), in txn.
std::int64_t lock_campaign_for_import(pqxx::transaction_base& txn, const std::string& name);
// The campaign's id, without a lock; voucherd_error(rejected) when unknown.
std::int64_t find_campaign(pqxx::transaction_base& txn, const std::string& name);

}  // namespace voucherd
