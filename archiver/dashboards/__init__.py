"""From New Relic dashboards to query files (`importer`), and from query files to Grafana."""
