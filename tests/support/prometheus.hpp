#pragma once
// Reading the Prometheus text of /metrics in checks.
#include <string>

namespace voucherd::test {

// The value of one sample line, e.g.
// metric_value(text, "voucherd_claims_total{outcome=\"claimed\"}"); -1 when absent.
inline double metric_value(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

}  // namespace voucherd::test
