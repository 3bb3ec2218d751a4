"""`nr-archiver verify`: compare the archive with New Relic, window by window, and repair it.

- `compare`: pure line-protocol semantics (parse the lines `run` writes, compare points);
- `command`: the orchestration (plan, fetch, transform and write exactly as `run` does, read
  back, compare, repair, prune);
- `report`: what it found, as a table, JSON and the `nr_archiver` self-metric.

Reading back and deleting are the sinks' (`archiver.sinks.readback` for InfluxQL).
"""
