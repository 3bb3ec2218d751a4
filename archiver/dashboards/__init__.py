"""From New Relic dashboards to query files (`importer`), and from query files to Grafana."""

# Here rather than in the modules that use them, so that `--help` needs no heavy import.
DEFAULT_DATABASE = "newrelic"  # the InfluxDB database of imported query files
DEFAULT_DATASOURCE_UID = "influxdb-newrelic"  # the data source deploy/grafana provisions
