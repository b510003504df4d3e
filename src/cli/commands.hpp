#pragma once
// The subcommands of `voucherd`. Each takes the arguments after its name and
// returns the process exit status; failures are thrown as voucherd_error (or
// a libpqxx exception) and mapped to exit statuses by main().
#include "cli/cli_support.hpp"

namespace voucherd::cli {

int run_migrate(const args& a);
int run_campaign(const args& a);
int run_import(const args& a);
int run_generate(const args& a);
int run_claim(const args& a);
int run_claim_batch(const args& a);
int run_stats(const args& a);
int run_story(const args& a);
int run_notify(const args& a);
int run_prune(const args& a);
int run_worker(const args& a);
int run_enqueue(const args& a);
int run_bench(const args& a);
int run_bench_pod(const args& a);  // hidden: one pod of `bench`

}  // namespace voucherd::cli
