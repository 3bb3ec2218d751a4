#!/usr/bin/env bash
# Installs Debian's influxdb package (InfluxDB 1.6.7) when influxd is not on PATH.
# The tests and the demo start their own influxd on a free port; nothing runs as a service.
set -euo pipefail
if command -v influxd >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
echo "influxd not found: installing Debian's influxdb package" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq influxdb >/dev/null
