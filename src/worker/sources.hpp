#pragma once
// The queue source a worker configuration names (stdin, pg or redis).
#include <memory>

#include "source/message_source.hpp"
#include "worker/worker_config.hpp"

namespace voucherd {

std::unique_ptr<message_source> make_source(const worker_config& config);

}  // namespace voucherd
