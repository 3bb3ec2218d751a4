"""nr-archiver: copy New Relic NRQL results into InfluxDB, window by window, checkpointed."""

__version__ = "0.1.0"
