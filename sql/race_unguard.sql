-- race_unguard: lets this transaction change a claimed voucher's owner, as the
-- story's schema (without voucher_item_owner_immutable, migration 0001) would.
-- Transaction-local (set_config's third argument), so it dies with the
-- transaction. Only the race lab's lock-based strategies run it.
--   no parameters
SELECT set_config('voucherd.unguarded', 'on', true);
