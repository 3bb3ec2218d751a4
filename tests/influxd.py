"""A real InfluxDB 1.x server for tests: Debian's `/usr/bin/influxd` on free ports in a temp dir.

`InfluxServer` is deliberately independent of `archiver.sinks.influx_v1` (plain `requests`), so
that the tests check the sink against InfluxDB itself rather than against the sink's own
reading code.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

INFLUXD = "/usr/bin/influxd"
READY_TIMEOUT_SECONDS = 120.0  # only bounds a failure: generous for a loaded 2-core machine
READ_STATEMENTS = ("SELECT", "SHOW")

CONFIG_TEMPLATE = """\
# Debian's 1.6.7 reads `reporting-enabled`; upstream reads `reporting-disabled`.
reporting-disabled = true
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{base_dir}/meta"

[data]
  dir = "{base_dir}/data"
  wal-dir = "{base_dir}/wal"
  query-log-enabled = false
  {data_config}

[monitor]
  store-enabled = false

[http]
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = {auth_enabled}
  log-enabled = false
  pprof-enabled = false
{http_config}

[logging]
  level = "warn"
  suppress-logo = true

[continuous_queries]
  enabled = false

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quote_identifier(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


@dataclass
class InfluxServer:
    """One influxd process; `stop()` and `start()` keep its data dir and port."""

    base_dir: Path
    http_port: int = field(default_factory=free_port)
    rpc_port: int = field(default_factory=free_port)
    auth_enabled: bool = False
    data_config: str = ""  # extra `key = value` lines for the [data] section
    http_config: str = ""  # extra `key = value` lines for the [http] section
    admin_username: str | None = None
    admin_password: str | None = field(default=None, repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def config_path(self) -> Path:
        return self.base_dir / "influxd.conf"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "influxd.log"

    def write_config(self) -> None:
        self.config_path.write_text(
            CONFIG_TEMPLATE.format(
                base_dir=self.base_dir,
                http_port=self.http_port,
                rpc_port=self.rpc_port,
                auth_enabled=str(self.auth_enabled).lower(),
                data_config=self.data_config,
                http_config=self.http_config,
            )
        )

    def start(self) -> None:
        """Start influxd (a no-op if it runs) and return once /ping answers."""
        if self.process is not None and self.process.poll() is None:
            return
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [INFLUXD, "-config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_until_ready()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"influxd exited with {self.process.returncode}: {self._log()}")
            try:
                if requests.get(f"{self.url}/ping", timeout=10).status_code == 204:
                    return
            except requests.RequestException:  # not listening yet, or too busy to answer
                pass
            time.sleep(0.05)  # a poll interval, not a synchronisation sleep
        self.stop()
        raise RuntimeError(f"influxd did not answer /ping within {READY_TIMEOUT_SECONDS} s")

    def _log(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def _auth(self) -> tuple[str, str] | None:
        if self.admin_username is None or self.admin_password is None:
            return None
        return (self.admin_username, self.admin_password)

    def query(self, influxql: str, db: str | None = None) -> list[dict]:
        """Run InfluxQL; return every row of every series as a dict (series tags merged in)."""
        params = {"q": influxql, "epoch": "s"}
        if db is not None:
            params["db"] = db
        method = "GET" if influxql.lstrip().upper().startswith(READ_STATEMENTS) else "POST"
        response = requests.request(
            method, f"{self.url}/query", params=params, auth=self._auth(), timeout=30
        )
        body = response.json()
        if "error" in body:
            raise RuntimeError(f"{influxql}: {body['error']}")
        rows = []
        for result in body["results"]:
            if "error" in result:
                raise RuntimeError(f"{influxql}: {result['error']}")
            for series in result.get("series", []):
                for values in series.get("values", []):
                    row = dict(zip(series["columns"], values, strict=True))
                    rows.append({**series.get("tags", {}), **row})
        return rows

    def points(self, db: str, measurement: str, rp: str | None = None) -> list[dict]:
        """Every point of a measurement as {"time", "tags", "fields"}, sorted by time and tags."""
        rp_part = quote_identifier(rp) if rp else ""  # "db".."m" is the default RP
        source = f"{quote_identifier(db)}.{rp_part}.{quote_identifier(measurement)}"
        response = requests.get(
            f"{self.url}/query",
            params={"q": f"SELECT * FROM {source} GROUP BY *", "db": db, "epoch": "s"},
            auth=self._auth(),
            timeout=30,
        )
        result = response.json()["results"][0]
        if "error" in result:
            raise RuntimeError(f"points({db}, {measurement}, {rp}): {result['error']}")
        points = [
            _point(series, values)
            for series in result.get("series", [])
            for values in series["values"]
        ]
        return sorted(points, key=lambda point: (point["time"], sorted(point["tags"].items())))

    def create_admin(self, username: str, password: str) -> None:
        """Create the first admin user (allowed without credentials while no user exists)."""
        quoted_password = password.replace("\\", "\\\\").replace("'", "\\'")
        self.query(
            f"CREATE USER {quote_identifier(username)} WITH PASSWORD '{quoted_password}' "
            "WITH ALL PRIVILEGES"
        )
        self.admin_username, self.admin_password = username, password


def _point(series: dict, values: list) -> dict:
    """A row of `GROUP BY *` as {"time", "tags", "fields"}; absent tags and fields left out."""
    row = dict(zip(series["columns"], values, strict=True))
    time_value = row.pop("time")
    tags = {key: value for key, value in series.get("tags", {}).items() if value}
    fields = {key: value for key, value in row.items() if value is not None}
    return {"time": time_value, "tags": tags, "fields": fields}


def unique_database_name() -> str:
    return f"test_{secrets.token_hex(6)}"


def require_influxd() -> None:
    if shutil.which(INFLUXD) is None:
        raise RuntimeError(
            f"{INFLUXD} is missing: the tests need a real InfluxDB 1.x "
            "(apt-get install -y influxdb)"
        )


@contextmanager
def running_influxd(
    base_dir: Path, *, with_auth: bool = False, data_config: str = "", http_config: str = ""
) -> Iterator[InfluxServer]:
    """An influxd in `base_dir`; with `with_auth`, auth is on and an admin user exists."""
    require_influxd()
    server = InfluxServer(
        base_dir, auth_enabled=with_auth, data_config=data_config, http_config=http_config
    )
    server.write_config()
    try:
        server.start()
        if with_auth:
            server.create_admin("admin", secrets.token_urlsafe(16))
        yield server
    finally:
        server.stop()
