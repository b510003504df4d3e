#pragma once
// The worker daemon (SPEC section 5): one process, `concurrency` claimer
// coroutines (worker/claim_loop.hpp), each owning one asynchronous Postgres
// connection, all draining one message_source (worker/sources.hpp); with
// --http, as many more claimers drain the HTTP surface
// (worker/http_surface.hpp); with --notify, an outbox_dispatcher thread
// delivers the notifications the claims wrote.
//
// Threads: the pg source's claimers share nothing but the database, so they
// are spread over claimer_threads() io_contexts, one thread each (claimer i
// on context i mod T; context 0 is the main thread's, which also serves
// signals, HTTP and every other source). A client that answers its
// connections from one thread keeps Postgres waiting on a busy machine;
// pgbench, our ceiling, runs a thread per client too.
//
// SIGTERM/SIGINT/SIGHUP: the source stops taking messages; each claimer finishes
// (commits or rolls back) its transaction and stops; the source flushes its
// acknowledgements; exit 0. After shutdown_grace the io_contexts are stopped
// regardless: an unfinished transaction dies with its connection (rolled back).
#include <memory>

#include "claim/metrics.hpp"
#include "source/message_source.hpp"
#include "worker/worker_config.hpp"

namespace voucherd {

class worker {
 public:
  worker(worker_config config, std::unique_ptr<message_source> source, metrics& registry);
  ~worker();
  // Runs until the source is finished or a signal stops it. Returns the exit status.
  int run();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace voucherd
