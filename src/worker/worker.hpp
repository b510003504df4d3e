#pragma once
// The worker daemon (SPEC section 5): one process, one io_context thread,
// `concurrency` claimer coroutines, each owning one asynchronous Postgres
// connection (pg_connection), all draining one message_source.
//
// A claimer's loop, one transaction per batch:
//   BEGIN; take up to --batch messages; claim them (claim_one, or
//   claim_batch per campaign); let the source record the outcomes; COMMIT;
//   then let the source acknowledge.
// Failures:
//  - a racing duplicate delivery (23505), serialization failure or deadlock:
//    roll back, give the messages back, run again;
//  - a lost connection: give the messages back, reconnect with capped
//    exponential backoff and jitter; never exit on it;
//  - anything else: roll back, give back, log, back off.
// SIGTERM/SIGINT: the source stops taking messages; each claimer finishes (commits
// or rolls back) its transaction and stops; the source flushes its
// acknowledgements; exit 0. After shutdown_grace the io_context is stopped
// regardless: an unfinished transaction dies with its connection (rolled back).
//
// With --http, POST /v1/claims messages go through the same claim path on
// `concurrency` further claimers (their own connections), so an HTTP claim
// never waits behind a queue batch. With --notify, an outbox_dispatcher
// thread delivers the notifications the claims wrote.
//
// Threads: the pg source's claimers share nothing but the database, so they
// are spread over claimer_threads() io_contexts, one thread each (claimer i
// on context i mod T; context 0 is the main thread's, which also serves
// signals, HTTP and every other source). A client that answers its
// connections from one thread keeps Postgres waiting on a busy machine;
// pgbench, our ceiling, runs a thread per client too.
#include <memory>

#include "common/metrics.hpp"
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

// Builds the source the config names (stdin, pg or redis).
std::unique_ptr<message_source> make_source(const worker_config& config);

}  // namespace voucherd
