"""`nr-archiver verify`: compare the archive with New Relic, window by window, and repair it.

- `compare`: pure line-protocol semantics (parse the lines `run` writes, compare points);
- `scope`: what is checked of a (query, target): its range, series and sampled windows;
- `repair`: one window read back, compared, repaired and pruned;
- `command`: the orchestration (plan, fetch and transform exactly as `run` does, leases, the
  per-target record, log line and self-metric);
- `report`: what it found, as a table, JSON and the `nr_archiver` self-metric.

Reading back and deleting are the sinks' (`archiver.sinks.readback` for InfluxQL).
"""
