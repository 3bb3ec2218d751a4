"""Where the points go: InfluxDB 1.x, influxdb-client (1.8+, 2.x, 3.x), a file."""
