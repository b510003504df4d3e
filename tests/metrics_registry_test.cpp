// The metrics registry: exact counts under concurrent recording, histogram
// buckets by latency, and the Prometheus text exposition format.
#include <doctest/doctest.h>

#include <thread>
#include <vector>

#include <fmt/format.h>

#include "claim/metrics.hpp"
#include "support/prometheus.hpp"

using namespace voucherd;
using namespace voucherd::test;

TEST_CASE("claims recorded from many threads at once are all counted") {
  metrics registry;
  constexpr int k_threads = 8, k_per_thread = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < k_threads; ++t)
    threads.emplace_back([&registry, t] {
      for (int i = 0; i < k_per_thread; ++i) {
        registry.record_claim(i % 4 == 0 ? claim_status::sold_out : claim_status::claimed, 0.002);
        if (t == 0 && i % 100 == 0) (void)registry.prometheus_text();  // scrapes while recording
      }
    });
  for (auto& t : threads) t.join();
  const auto text = registry.prometheus_text();
  const double total = k_threads * k_per_thread;
  CHECK_MESSAGE(registry.claims(claim_status::sold_out) == total / 4, registry.claims(claim_status::sold_out));
  CHECK_MESSAGE(registry.claims(claim_status::claimed) == total * 3 / 4, registry.claims(claim_status::claimed));
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claims_total{outcome="claimed"})") == total * 3 / 4, text);
  CHECK_MESSAGE(metric_value(text, "voucherd_claim_duration_seconds_count") == total, text);
  CHECK_MESSAGE(std::abs(metric_value(text, "voucherd_claim_duration_seconds_sum") - total * 0.002) < 1e-6 * total, text);
}

TEST_CASE("the latency histogram puts each claim in the first bucket that holds it, cumulatively") {
  metrics registry;
  registry.record_claim(claim_status::claimed, 0.0004);  // le 0.0005
  registry.record_claim(claim_status::claimed, 0.001);   // le 0.001 (bounds are inclusive)
  registry.record_claim(claim_status::claimed, 0.3);     // le 0.5
  registry.record_claim(claim_status::claimed, 10.0);    // only +Inf
  const auto text = registry.prometheus_text();
  auto bucket = [&](const char* le) {
    return metric_value(text, fmt::format("voucherd_claim_duration_seconds_bucket{{le=\"{}\"}}", le));
  };
  CHECK_MESSAGE(bucket("0.0005") == 1, text);
  CHECK_MESSAGE(bucket("0.001") == 2, text);
  CHECK_MESSAGE(bucket("0.25") == 2, text);
  CHECK_MESSAGE(bucket("0.5") == 3, text);
  CHECK_MESSAGE(bucket("2.5") == 3, text);
  CHECK_MESSAGE(bucket("+Inf") == 4, text);
  CHECK_MESSAGE(metric_value(text, "voucherd_claim_duration_seconds_count") == 4, text);
}

TEST_CASE("the HTTP wait histogram is a series of its own, apart from the claim latency") {
  metrics registry;
  registry.record_http_wait(0.002);  // le 0.0025
  registry.record_http_wait(0.2);    // le 0.25
  registry.record_claim(claim_status::claimed, 0.0004);
  const auto text = registry.prometheus_text();
  CHECK_MESSAGE(metric_value(text, R"(voucherd_http_wait_seconds_bucket{le="0.001"})") == 0, text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_http_wait_seconds_bucket{le="0.0025"})") == 1, text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_http_wait_seconds_bucket{le="0.25"})") == 2, text);
  CHECK_MESSAGE(metric_value(text, "voucherd_http_wait_seconds_count") == 2, text);
  CHECK_MESSAGE(std::abs(metric_value(text, "voucherd_http_wait_seconds_sum") - 0.202) < 1e-9, text);
  CHECK_MESSAGE(metric_value(text, "voucherd_claim_duration_seconds_count") == 1, text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_claim_duration_seconds_bucket{le="0.0005"})") == 1, text);
}

TEST_CASE("every series has HELP and TYPE lines and the gauges show the last value set") {
  metrics registry;
  registry.set_queue_lag(1.5);
  registry.set_queue_lag(0.25);
  registry.set_outbox_pending(42);
  registry.add_dead_letter();
  registry.add_dead_letter();
  registry.add_notification(true);
  registry.add_notification(false);
  registry.add_notification(false);
  const auto text = registry.prometheus_text();
  for (const char* family : {"voucherd_claims_total counter", "voucherd_claim_duration_seconds histogram",
                             "voucherd_queue_lag_seconds gauge", "voucherd_outbox_pending gauge",
                             "voucherd_dead_letters_total counter", "voucherd_notification_attempts_total counter",
                             "voucherd_http_wait_seconds histogram"}) {
    CHECK_MESSAGE(text.find(fmt::format("# TYPE {}\n", family)) != std::string::npos, family << "\n" << text);
    const std::string name{family, std::string_view{family}.find(' ')};
    CHECK_MESSAGE(text.find("# HELP " + name + " ") != std::string::npos, name);
  }
  CHECK_MESSAGE(metric_value(text, "voucherd_queue_lag_seconds") == 0.25, text);
  CHECK_MESSAGE(metric_value(text, "voucherd_outbox_pending") == 42, text);
  CHECK_MESSAGE(metric_value(text, "voucherd_dead_letters_total") == 2, text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_notification_attempts_total{result="delivered"})") == 1, text);
  CHECK_MESSAGE(metric_value(text, R"(voucherd_notification_attempts_total{result="failed"})") == 2, text);
  for (const char* outcome : {"claimed", "already_claimed", "sold_out", "rejected"})
    CHECK_MESSAGE(metric_value(text, fmt::format("voucherd_claims_total{{outcome=\"{}\"}}", outcome)) == 0,
                  "every outcome is exposed from the start: " << outcome);
  CHECK_MESSAGE(text.back() == '\n', "the exposition ends with a newline");
}
