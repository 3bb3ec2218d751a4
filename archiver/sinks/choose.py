"""Which sink the points go to: the choice from settings (`Sink` is in `archiver.sinks.base`).

`open_sink` picks the sink once per run:

- `output` (`FILE.lp` or `-` for stdout): `FileSink` (`archiver.sinks.file`), the exact line
  protocol, nothing sent;
- `api="v1"`: `InfluxV1Sink` (`/write` + InfluxQL), without asking the server anything;
- `api="auto"` (the default): the `X-Influxdb-Version` of `GET /ping` decides: 1.x before 1.8
  → `InfluxV1Sink`; 1.8+ → `InfluxClientSink` in 1.8 mode; 2.x → buckets + DBRP mappings;
  3.x → one database per target (see `archiver.sinks.influx_client` for the names);
- `api="v2"`: `InfluxClientSink` whatever the version, in the mode the version gives (2.x when
  it cannot be read).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from archiver.errors import AuthError, ConfigError, InfluxError
from archiver.settings import Settings
from archiver.sinks.base import Sink
from archiver.sinks.file import FileSink
from archiver.sinks.influx_v1 import InfluxV1Sink

if TYPE_CHECKING:
    from archiver.sinks.influx_client import Flavour

log = logging.getLogger(__name__)

API_CHOICES = ("auto", "v1", "v2")
VERSION = re.compile(r"v?(\d+)\.(\d+)")


def open_sink(
    settings: Settings,
    *,
    api: str = "auto",
    output: str | None = None,
    org: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Sink:
    """The sink for this run; raises ConfigError for a bad choice, InfluxError for a non-Influx."""
    if output is not None:
        return FileSink.open(output)
    if api not in API_CHOICES:
        raise ConfigError(f"INFLUX_API must be one of {', '.join(API_CHOICES)}, not {api!r}")
    v1 = InfluxV1Sink(
        settings.influx_url,
        settings.influx_username,
        settings.influx_password,
        timeout=settings.influx_timeout,
        sleep=sleep,
    )
    if api == "v1":
        return v1
    try:
        version = _server_version(v1, settings, sleep)
        flavour = _flavour(version, api, v1.display_url)
    except BaseException:
        v1.close()
        raise
    if flavour is None:
        log.info("InfluxDB %s at %s: writing with /write", version, v1.display_url)
        return v1
    v1.close()
    log.info("InfluxDB %s at %s: writing with /api/v2/write", version, v1.display_url)
    from archiver.sinks.influx_client import InfluxClientSink  # only when needed: a slow import

    return InfluxClientSink(
        settings.influx_url,
        flavour=flavour,
        token=settings.influx_token,
        org=org if org is not None else settings.influx_org,
        username=settings.influx_username,
        password=settings.influx_password,
        timeout=settings.influx_timeout,
        sleep=sleep,
    )


def _server_version(v1: InfluxV1Sink, settings: Settings, sleep: Callable[[float], None]) -> str:
    """`X-Influxdb-Version` of `/ping`, asked with the token when the server wants one (3.x)."""
    try:
        return v1.ping()
    except AuthError:
        if not settings.influx_token:
            raise
    from archiver.sinks.influx_client import InfluxClientSink

    with InfluxClientSink(
        settings.influx_url,
        flavour="3.x",
        token=settings.influx_token,
        timeout=settings.influx_timeout,
        sleep=sleep,
    ) as probe:
        return probe.ping()


def _flavour(version: str, api: str, url: str) -> Flavour | None:
    """How to talk to InfluxDB `version`: None for 1.x's `/write`, else influxdb-client's mode."""
    found = VERSION.match(version)
    major, minor = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    if major == 0:
        if api == "v2":
            return "2.x"
        raise InfluxError(
            f"INFLUX_URL {url} runs InfluxDB {version!r}, a version nr-archiver cannot read: "
            "set INFLUX_API=v1 or INFLUX_API=v2"
        )
    if major == 1 and minor < 8:
        if api == "v2":
            raise ConfigError(
                f"INFLUX_API=v2, but InfluxDB {version} at {url} has no /api/v2/write "
                "(it came with 1.8): set INFLUX_API=auto or v1"
            )
        return None
    if major == 1:
        return "1.8"
    return "2.x" if major == 2 else "3.x"
