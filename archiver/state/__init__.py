"""The state database: checkpoints, run log, backfills, leases."""
